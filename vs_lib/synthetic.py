"""The synthetic world around the real images: users, image metadata and a seed click log.

Fashion-MNIST gives real pixels and nothing else. A platform also needs people who upload
and search, flags on images (private, inappropriate) and a history of what was shown and
clicked. :func:`generate` makes all of it from one seeded generator, so the same
:class:`GeneratorConfig` always gives the same rows; :func:`vs_lib.data.build_database`
writes them into the platform database and marks every row ``synthetic = 1``.

The seed log imitates a *legacy* search system: each session shows ``list_length`` images
(55% of the query's class, 25% of a related garment group, 20% random) and a simulated
user clicks by a position-based model, ``P(click) = examine(position) * attract(relevance)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Manual tags a person might attach to each Fashion-MNIST class (used by filters and shown
# in results; never seen by the model).
CLASS_TAGS = [
    ["t-shirt", "top", "upper-body", "clothing"],
    ["trouser", "pants", "lower-body", "clothing"],
    ["pullover", "sweater", "upper-body", "clothing"],
    ["dress", "one-piece", "clothing"],
    ["coat", "outerwear", "upper-body", "clothing"],
    ["sandal", "summer", "footwear"],
    ["shirt", "upper-body", "clothing"],
    ["sneaker", "sport", "footwear"],
    ["bag", "accessory"],
    ["ankle-boot", "boot", "footwear"],
]
# Coarse groups of related garments: 0 upper body and dresses, 1 trousers, 2 footwear, 3 bags.
CLASS_GROUP = np.array([0, 1, 0, 0, 0, 2, 0, 2, 3, 2])

# Cities with coordinates, for users and interaction locations: (city, country, lat, lon).
CITIES = [
    ("Berlin", "Germany", 52.52, 13.40),
    ("Hamburg", "Germany", 53.55, 9.99),
    ("Paris", "France", 48.86, 2.35),
    ("Lyon", "France", 45.76, 4.84),
    ("Madrid", "Spain", 40.42, -3.70),
    ("Milan", "Italy", 45.46, 9.19),
    ("Amsterdam", "Netherlands", 52.37, 4.90),
    ("Stockholm", "Sweden", 59.33, 18.07),
    ("Warsaw", "Poland", 52.23, 21.01),
    ("London", "United Kingdom", 51.51, -0.13),
    ("Dublin", "Ireland", 53.35, -6.26),
    ("New York", "United States", 40.71, -74.01),
    ("Chicago", "United States", 41.88, -87.63),
    ("San Francisco", "United States", 37.77, -122.42),
    ("Toronto", "Canada", 43.65, -79.38),
    ("São Paulo", "Brazil", -23.55, -46.63),
    ("Tokyo", "Japan", 35.68, 139.69),
    ("Seoul", "South Korea", 37.57, 126.98),
    ("Sydney", "Australia", -33.87, 151.21),
    ("Lagos", "Nigeria", 6.52, 3.38),
]
GENDERS = ["female", "male", "non-binary", "undisclosed"]
EPOCH_START = 1_672_531_200  # 2023-01-01 UTC: synthetic uploads span two years from here
YEAR = 365 * 86_400

Row = tuple[object, ...]


@dataclass(frozen=True)
class GeneratorConfig:
    """What the seeded generator produces; recorded in the database so a rebuild is detected."""

    seed: int = 0
    n_users: int = 3_000
    n_sessions: int = 20_000
    list_length: int = 10
    private_rate: float = 0.02
    flagged_rate: float = 0.01

    def key(self) -> str:
        """``"field=value,..."`` in field order: equal keys mean equal generated rows."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.__dict__.items()))


def generate(cfg: GeneratorConfig, labels: np.ndarray, n_train: int) -> dict[str, list[Row]]:
    """All synthetic rows, in the column order of the ``users``, ``images`` and ``interactions`` tables.

    ``labels``: ``(n,)`` class of every image, train images first; image ``i`` gets id ``i``
    and the storage key ``fashion-mnist/train/i`` (``i < n_train``) or
    ``fashion-mnist/test/<i - n_train>``. Queries of the seed log are training images only.
    """
    rng = np.random.default_rng(cfg.seed)
    users, city_idx = _users(cfg, rng)
    images, visible = _images(cfg, rng, labels, n_train)
    interactions = _seed_log(cfg, rng, labels, n_train, visible, city_idx)
    return {"users": users, "images": images, "interactions": interactions}


def _users(cfg: GeneratorConfig, rng: np.random.Generator) -> tuple[list[Row], np.ndarray]:
    uid = np.arange(1, cfg.n_users + 1)
    city_idx = rng.integers(0, len(CITIES), cfg.n_users)
    ages = np.clip(rng.normal(34, 11, cfg.n_users).round(), 16, 80).astype(int)
    genders = rng.choice(len(GENDERS), cfg.n_users, p=[0.48, 0.44, 0.03, 0.05])
    users: list[Row] = [
        (int(u), f"user{u:05d}", int(a), GENDERS[g], CITIES[c][0], CITIES[c][1], f"user{u:05d}@example.com", 1)
        for u, a, g, c in zip(uid, ages, genders, city_idx, strict=True)
    ]
    return users, city_idx


def _images(
    cfg: GeneratorConfig, rng: np.random.Generator, labels: np.ndarray, n_train: int
) -> tuple[list[Row], np.ndarray]:
    """Real pixels, synthetic metadata; also which images the legacy system may show."""
    n_images = len(labels)
    owners = rng.integers(1, cfg.n_users + 1, n_images)
    upload = EPOCH_START + rng.integers(0, 2 * YEAR, n_images)
    private = rng.random(n_images) < cfg.private_rate
    flagged = rng.random(n_images) < cfg.flagged_rate
    tag_text = [",".join(t) for t in CLASS_TAGS]
    images: list[Row] = []
    for i in range(n_images):
        split, j = ("train", i) if i < n_train else ("test", i - n_train)
        key = f"fashion-mnist/{split}/{j}"
        images.append(
            (i, int(owners[i]), int(upload[i]), tag_text[labels[i]], int(private[i]), int(flagged[i]), key, split, 1)
        )
    return images, ~(private | flagged)


def _seed_log(
    cfg: GeneratorConfig,
    rng: np.random.Generator,
    labels: np.ndarray,
    n_train: int,
    visible: np.ndarray,
    city_idx: np.ndarray,
) -> list[Row]:
    """Impressions and clicks of the legacy system, by a position-based click model."""
    train_idx = np.arange(min(n_train, len(labels)))
    by_class = [train_idx[labels[train_idx] == c] for c in range(len(CLASS_TAGS))]
    by_group = [train_idx[CLASS_GROUP[labels[train_idx]] == g] for g in range(CLASS_GROUP.max() + 1)]
    rows: list[Row] = []
    n = cfg.list_length
    examine = 1.0 / np.arange(1, n + 1) ** 0.8
    t0 = EPOCH_START + 2 * YEAR  # the log covers the 90 days after the last upload
    next_id = 1
    for s in range(cfg.n_sessions):
        user = int(rng.integers(1, cfg.n_users + 1))
        q = int(train_idx[rng.integers(0, len(train_idx))])  # = rng.choice(train_idx), same draws, faster
        cq = labels[q]
        shown: list[int] = []
        while len(shown) < n:  # legacy ranking: 55% same class, 25% related group, 20% random
            r = rng.random()
            pool = by_class[cq] if r < 0.55 else by_group[CLASS_GROUP[cq]] if r < 0.80 else train_idx
            cand = int(pool[rng.integers(0, len(pool))])
            if cand != q and visible[cand] and cand not in shown:
                shown.append(cand)
        c = CITIES[city_idx[user - 1]]
        lat = min(max(float(c[2] + rng.normal(0, 0.05)), -90.0), 90.0)
        lon = min(max(float(c[3] + rng.normal(0, 0.05)), -180.0), 180.0)
        ts = int(t0 + rng.integers(0, 90 * 86_400))
        shown_arr = np.array(shown)
        same = labels[shown_arr] == cq
        related = CLASS_GROUP[labels[shown_arr]] == CLASS_GROUP[cq]
        attract = np.where(same, 0.45, np.where(related, 0.12, 0.03))
        clicks = rng.random(n) < examine * attract
        for pos, (img, clicked) in enumerate(zip(shown, clicks, strict=True), start=1):
            rows.append((next_id, user, q, img, pos, "impression", lat, lon, ts + pos, s + 1, None, "seed-log", 1))
            next_id += 1
            if clicked:
                dwell = round(float(rng.gamma(2.0, 6.0 if same[pos - 1] else 2.0)), 2)
                rows.append((next_id, user, q, img, pos, "click", lat, lon, ts + pos + 2, s + 1, dwell, "seed-log", 1))
                next_id += 1
    return rows
