"""Collections on tiny generated folders: scanning, incremental sync, crashes, search, dedup, bad input.

A small stand-in encoder (the pixels baseline: every image as 28 x 28 grey pixels) keeps
these fast; it counts its calls so the tests can prove what is *not* re-embedded.  The
photo encoder itself is tested in ``test_photo.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vs_lib import collection, folders, models
from vs_lib.collection import CollectionError


class CountingEncoder:
    """The pixels baseline, counting embedded images; ``fail_after`` calls raise KeyboardInterrupt."""

    def __init__(self, fail_after: int | None = None):
        self.inner = models.baseline_encoder("pixels")
        self.name, self.dim, self.fingerprint = "pixels", self.inner.dim, self.inner.fingerprint
        self.preprocess = self.inner.preprocess
        self.calls = 0
        self.images = 0
        self.fail_after = fail_after

    def embed(self, images, batch_size=256):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        self.calls += 1
        self.images += len(images)
        return self.inner.embed(images, batch_size=batch_size)


def picture(seed: int, size=(48, 40), mode="RGB") -> Image.Image:
    """A distinct picture per seed: smooth colour blobs (so small changes keep the pHash close)."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    im = Image.fromarray(low).resize(size, Image.Resampling.BICUBIC)
    return im.convert(mode)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    d = tmp_path / "data"
    monkeypatch.setenv("VS_DATA_DIR", str(d))
    monkeypatch.setenv("VS_MODELS_DIR", str(d / "models"))
    return d


@pytest.fixture
def folder(tmp_path):
    f = tmp_path / "photos"
    (f / "a" / "b").mkdir(parents=True)
    picture(1).save(f / "one.png")
    picture(2).save(f / "a" / "two.JPG", quality=95)
    picture(3).save(f / "a" / "b" / "three.webp")
    picture(4).save(f / "four.bmp")
    return f


def sync(folder, encoder, **kw):
    return collection.index_folder(folder, encoder=encoder, progress=False, **kw)


# --------------------------------------------------------------------------- scanning
def test_scan_lists_images_and_leaves_out_the_rest(folder):
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"x")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "gone.png").symlink_to(folder / "missing.png")
    (folder / "a" / "loop").symlink_to(folder)  # a symlink loop: the scan must end
    os.mkfifo(folder / "pipe.png")  # opening a FIFO would block: it must not be opened
    scan = folders.scan_folder(folder)
    assert [f.path for f in scan.files] == ["a/b/three.webp", "a/two.JPG", "four.bmp", "one.png"]
    skipped = dict(scan.skipped)
    assert skipped["empty.jpg"].startswith("empty") and skipped["gone.png"] == "broken link"
    assert skipped["pipe.png"] == "not a regular file"
    ignored = dict(scan.ignored)
    assert ignored["notes.txt"] == "not an image type" and ignored[".hidden.png"] == "hidden"
    assert "loop" in ignored["a/loop"]
    sizes = {f.path: f.size for f in scan.files}
    assert sizes["one.png"] == (folder / "one.png").stat().st_size


def test_missing_or_empty_folder_is_a_clear_error_and_writes_nothing(tmp_path, data_dir):
    enc = CountingEncoder()
    with pytest.raises(FileNotFoundError, match="no folder"):
        sync(tmp_path / "nope", enc)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    with pytest.raises(CollectionError, match="no image files"):
        sync(tmp_path / "empty", enc)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        sync(tmp_path / "file.png", enc)
    assert not (data_dir / "collections").exists() or not list((data_dir / "collections").glob("*/collection.json"))
    assert enc.calls == 0


# --------------------------------------------------------------------------- bad files
def test_unusable_files_are_skipped_listed_and_not_retried(folder, data_dir):
    good = (folder / "one.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "text.jpg").write_text("this is not a JPEG")
    (folder / "zero.png").write_bytes(b"")
    enc = CountingEncoder()
    report = sync(folder, enc)
    bad = dict(report.all_skipped())
    assert set(bad) == {"truncated.png", "text.jpg", "zero.png"}
    assert "truncated" in bad["truncated.png"] and "not an image" in bad["text.jpg"] and "empty" in bad["zero.png"]
    assert report.total == 4 and report.embedded == 4 and "skipped 3 file(s)" in report.summary()
    again = sync(folder, CountingEncoder())
    assert again.embedded == 0 and not again.saved and dict(again.all_skipped()) == bad  # not retried, still listed
    picture(9).save(folder / "truncated.png")  # repaired: now it is indexed
    fixed = sync(folder, CountingEncoder())
    assert fixed.new == 1 and "truncated.png" in collection.Collection.open(folder=folder).paths()


def test_decompression_bombs_are_refused_before_decoding(folder, data_dir):
    Image.new("L", (8000, 6000), 200).save(folder / "bomb.png")  # 48 MP of one colour: a tiny file
    small = folder / "small.png"
    picture(5, size=(300, 300)).save(small)
    with pytest.raises(folders.ImageFileError, match="decompression-bomb"):
        folders.decode_image_bytes((folder / "bomb.png").read_bytes())
    with pytest.raises(folders.ImageFileError, match="decompression-bomb"):
        folders.decode_image_bytes(small.read_bytes(), max_pixels=10_000)
    report = sync(folder, CountingEncoder())
    assert "decompression-bomb" in dict(report.all_skipped())["bomb.png"]
    assert report.total == 5


def test_a_file_deleted_or_changed_between_scan_and_embed(folder, data_dir, monkeypatch):
    from vs_lib.collection import sync as sync_module

    real_plan = sync_module._plan

    def plan_then_edit(*args, **kwargs):
        out = real_plan(*args, **kwargs)
        (folder / "four.bmp").unlink()  # deleted after it was hashed
        picture(77).save(folder / "one.png")  # rewritten after it was hashed
        return out

    monkeypatch.setattr(sync_module, "_plan", plan_then_edit)
    report = sync(folder, CountingEncoder())
    assert dict(report.all_skipped())["four.bmp"] == "deleted before it could be read"
    state = collection.open_state(folder)
    one = next(r for r in state.records if r.path == "one.png")
    import hashlib

    assert one.sha256 == hashlib.sha256((folder / "one.png").read_bytes()).hexdigest()  # the bytes embedded
    assert one.size == (folder / "one.png").stat().st_size
    assert [r.path for r in state.records] == ["a/b/three.webp", "a/two.JPG", "one.png"]


# --------------------------------------------------------------------------- incremental
def test_nothing_changed_means_no_work(folder, data_dir):
    sync(folder, CountingEncoder())
    manifest = data_dir / "collections" / "photos-pixels" / "collection.json"
    before = manifest.stat().st_mtime_ns
    enc = CountingEncoder()
    report = sync(folder, enc)
    assert (report.unchanged, report.embedded, report.saved) == (4, 0, False)
    assert enc.calls == 0 and manifest.stat().st_mtime_ns == before


def test_moved_renamed_touched_changed_deleted(folder, data_dir):
    first = sync(folder, CountingEncoder())
    assert first.new == 4 and first.name == "photos-pixels"  # <folder>-<model> for a model other than photo
    vectors = dict(zip(collection.open_state(folder).records, collection.open_state(folder).vectors, strict=True))
    old = {r.sha256: v for r, v in vectors.items()}
    (folder / "elsewhere").mkdir()
    shutil.move(folder / "a" / "two.JPG", folder / "elsewhere" / "renamed.jpg")  # moved + renamed
    os.utime(folder / "four.bmp", ns=(1, 1))  # touched: new mtime, same bytes
    picture(40).save(folder / "one.png")  # changed content
    (folder / "a" / "b" / "three.webp").unlink()  # deleted
    enc = CountingEncoder()
    report = sync(folder, enc)
    assert (report.moved, report.touched, report.changed, report.removed, report.new) == (1, 1, 1, 1, 0)
    assert enc.images == 1  # only the changed file went through the encoder
    state = collection.open_state(folder)
    assert [r.path for r in state.records] == ["elsewhere/renamed.jpg", "four.bmp", "one.png"]
    moved = state.records[0]
    np.testing.assert_array_equal(state.vectors[0], old[moved.sha256])  # the vector travelled with the content
    assert state.records[1].mtime_ns == 1


def test_an_interrupted_sync_keeps_the_previous_collection_and_resumes(folder, data_dir):
    sync(folder, CountingEncoder(), batch_size=2)
    for i in range(6):
        picture(100 + i).save(folder / f"new{i}.png")
    crashing = CountingEncoder(fail_after=2)  # two batches of 2 embedded, the third crashes
    with pytest.raises(KeyboardInterrupt):
        sync(folder, crashing, batch_size=2)
    state = collection.open_state(folder)  # the previous collection, intact
    assert len(state.records) == 4 and state.vectors.shape == (4, crashing.dim)
    assert (
        collection.Collection(state, encoder=CountingEncoder()).search(folder / "one.png", k=1).results[0].path
        == "one.png"
    )
    resumed = CountingEncoder()
    report = sync(folder, resumed, batch_size=2)
    assert resumed.images == 2 and report.reused == 4 and report.new == 6  # 4 from the crashed run's batches
    state = collection.open_state(folder)
    assert len(state.records) == 10
    ref = CountingEncoder()
    for i, r in enumerate(state.records):  # every vector is the embedding of its file
        expected = ref.embed([folders.load_file_image(folder, r.path, draft_min_side=224)])[0]
        np.testing.assert_allclose(state.vectors[i], expected, atol=1e-6)
    assert not list((data_dir / "collections" / "photos-pixels" / "pending").rglob("*.npz"))


def test_a_collection_remembers_its_folder_and_refuses_another(folder, tmp_path, data_dir):
    sync(folder, CountingEncoder(), name="holiday")
    assert collection.open_state(folder).name == "holiday"  # found by folder, whatever its name
    other = tmp_path / "other"
    other.mkdir()
    picture(8).save(other / "x.png")
    with pytest.raises(CollectionError, match="indexes"):
        sync(other, CountingEncoder(), name="holiday")
    with pytest.raises(CollectionError, match="not indexed"):
        collection.open_state(tmp_path / "never")
    with pytest.raises(CollectionError, match="collection name"):
        sync(folder, CountingEncoder(), name="../escape")


# --------------------------------------------------------------------------- search
@pytest.fixture
def searchable(folder, data_dir):
    picture(1).save(folder / "copy_of_one.png")  # an exact duplicate of one.png
    picture(1, size=(96, 80)).save(folder / "bigger_one.png")  # the same picture at another size
    sync(folder, CountingEncoder())
    return collection.Collection.open(folder=folder, encoder=CountingEncoder())


def test_search_keeps_the_query_s_duplicate_and_collapses_the_others(searchable, folder):
    found = searchable.search(folder / "one.png", k=3)
    top = found.results[0]
    assert top.score == pytest.approx(1.0, abs=1e-5) and top.rank == 1
    group = {top.path, *top.duplicate_paths}
    assert group == {"one.png", "copy_of_one.png", "bigger_one.png"} and top.duplicates == 2
    assert found.collapsed == 2 and len(found.results) == 3
    assert len({h.path for h in found.results} & group) == 1  # the copies take no place of their own
    scores = [h.score for h in found.results]
    assert scores == sorted(scores, reverse=True)
    no_collapse = collection.Collection(searchable.state, encoder=CountingEncoder(), dup_hamming=None)
    hits = no_collapse.search(folder / "one.png", k=3).results
    assert hits[0].path in {"one.png", "copy_of_one.png"} and hits[0].duplicates == 1  # exact copies: by content hash
    assert "bigger_one.png" in [h.path for h in hits]


def test_search_scores_are_centred_cosines(searchable, folder):
    emb = searchable.embeddings
    q = searchable.embed_query(folder / "four.bmp")
    found = searchable.search(folder / "four.bmp", k=2)
    for hit in found.results:
        assert hit.score == pytest.approx(float(emb[searchable.row(hit.path)] @ q), abs=1e-5)
    raw = searchable.state.vectors
    centred = (raw - raw.mean(0)) / np.linalg.norm(raw - raw.mean(0), axis=1, keepdims=True)
    np.testing.assert_allclose(emb, centred, atol=1e-6)


def test_min_score_and_bytes_and_pil_queries(searchable, folder):
    data = (folder / "four.bmp").read_bytes()
    by_bytes = searchable.search(data, k=5)
    by_pil = searchable.search(Image.open(folder / "four.bmp"), k=5)
    assert [h.path for h in by_bytes.results] == [h.path for h in by_pil.results]
    cut = by_bytes.results[1].score
    assert all(h.score >= cut for h in searchable.search(data, k=5, min_score=cut).results)
    assert len(searchable.search(data, k=5, min_score=cut).results) == 2


def test_crop_queries_and_bad_queries(searchable, folder):
    w, h = Image.open(folder / "one.png").size
    full = searchable.embed_query(folder / "one.png")
    left = searchable.embed_query(folder / "one.png", crop=(0, 0, w // 2, h))
    assert not np.allclose(full, left)
    np.testing.assert_allclose(searchable.embed_query(folder / "one.png", crop=f"0,0,{w},{h}"), full, atol=1e-6)
    for bad, msg in [
        ((0, 0, w + 1, h), "outside"),
        ((10, 10, 5, 20), "empty"),
        ("1,2,3", "four numbers"),
        ("a,b,c,d", "four numbers"),
    ]:
        with pytest.raises(CollectionError, match=msg):
            searchable.search(folder / "one.png", crop=bad)
    for k in (0, -3, 2.5, True):
        with pytest.raises(CollectionError, match="positive"):
            searchable.search(folder / "one.png", k=k)
    with pytest.raises(CollectionError, match="not a usable image"):
        searchable.search(b"not an image")
    with pytest.raises(CollectionError, match="cannot read"):
        searchable.search(folder / "nope.png")


def test_thumbnails_only_for_indexed_paths(searchable, folder, tmp_path):
    png = searchable.thumbnail("a/two.JPG", size=32)
    im = Image.open(__import__("io").BytesIO(png))
    assert im.format == "PNG" and max(im.size) == 32
    (tmp_path / "secret.png").write_bytes((folder / "one.png").read_bytes())
    for outside in ("../secret.png", "/etc/passwd", str(tmp_path / "secret.png"), "notes.txt"):
        with pytest.raises(CollectionError, match="not an image of the collection"):
            searchable.thumbnail(outside)
    with pytest.raises(CollectionError, match="between"):
        searchable.thumbnail("one.png", size=5000)


# --------------------------------------------------------------------------- dedup
def brute_force_groups(n, sha, hashes, threshold, vectors, min_cosine):
    """Reference: the full n x n link matrix, then scipy's connected components."""
    from scipy.sparse.csgraph import connected_components

    links = np.array(sha)[:, None] == np.array(sha)[None, :]
    bits = np.unpackbits(hashes.astype(">u8").view(np.uint8).reshape(n, 8), axis=1)
    links |= (bits[:, None, :] != bits[None, :, :]).sum(-1) <= threshold
    if vectors is not None:
        links |= vectors @ vectors.T >= min_cosine
    _, label = connected_components(links, directed=False)
    return sorted(tuple(np.flatnonzero(label == c).tolist()) for c in np.unique(label) if (label == c).sum() > 1)


@pytest.mark.parametrize("threshold", [0, 3, 6, 10])
def test_dedup_groups_equal_a_brute_force_reference(threshold):
    rng = np.random.default_rng(threshold)
    n = 400
    hashes = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    for i in range(0, 60, 3):  # planted near-duplicates: a few flipped bits
        flips = rng.choice(64, rng.integers(0, 12), replace=False)
        hashes[i + 1] = hashes[i] ^ np.uint64(sum(1 << int(b) for b in flips))
    sha = [f"h{i}" for i in range(n)]
    sha[300] = sha[301] = "same bytes"
    vectors = rng.standard_normal((n, 16)).astype(np.float32)
    vectors[200] = vectors[201] + 0.01
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    groups, counts = collection.duplicate_groups(
        n, sha256=sha, hashes=hashes, threshold=threshold, vectors=vectors, min_cosine=0.99
    )
    assert sorted(g.rows for g in groups) == brute_force_groups(n, sha, hashes, threshold, vectors, 0.99)
    assert counts["exact"] == 1 and next(g for g in groups if 300 in g.rows).kind == "exact"
    pairs = collection.hash_pairs(hashes, threshold)
    bits = np.unpackbits(hashes.astype(">u8").view(np.uint8).reshape(n, 8), axis=1)
    d = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    iu = np.triu_indices(n, 1)
    truth = {(int(a), int(b)) for a, b in zip(*iu, strict=True) if d[a, b] <= threshold}
    assert {tuple(p) for p in pairs.tolist()} == truth


def test_dedup_of_a_collection(searchable, folder):
    report = collection.find_duplicates(searchable, threshold=4)
    groups = {g.paths: g.kind for g in report.groups}
    assert groups == {("bigger_one.png", "copy_of_one.png", "one.png"): "near"}
    assert report.duplicates == 2
    exact_only = collection.find_duplicates(searchable, threshold=None)
    assert {g.paths: g.kind for g in exact_only.groups} == {("copy_of_one.png", "one.png"): "exact"}
    with pytest.raises(CollectionError, match="bits"):
        collection.find_duplicates(searchable, threshold=99)


# --------------------------------------------------------------------------- the command line
@pytest.fixture
def pixels_model(data_dir):
    path = data_dir / "models" / "pixels.pt"
    models.baseline_encoder("pixels").save(path)
    return path


def test_command_line_index_search_dedup(folder, pixels_model, tmp_path, capsys):
    import json

    from vs_lib.__main__ import main

    picture(1).save(folder / "copy.png")
    assert main(["index", "--folder", str(folder), "--model", str(pixels_model), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == 5 and report["name"] == "photos-pixels"
    sheet = tmp_path / "sheet.png"
    args = ["search", str(folder / "one.png"), str(folder / "four.bmp"), "--folder", str(folder), "-k", "2"]
    assert main([*args, "--model", str(pixels_model), "--json", "--sheet", str(sheet)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [len(q["results"]) for q in doc["queries"]] == [2, 2]
    first = doc["queries"][0]["results"][0]
    assert set(first) >= {"path", "score", "rank", "duplicates"} and first["path"] in {"one.png", "copy.png"}
    assert first["duplicates"] == 1 and Image.open(sheet).size[0] > 0
    with pytest.raises(SystemExit):
        main(["search", str(folder / "one.png"), "--folder", str(folder), "-k", "0"])
    assert "positive" in capsys.readouterr().err
    crop = ["--crop", "0,0,9999,10", "--model", str(pixels_model)]
    assert main(["search", str(folder / "one.png"), "--folder", str(folder), *crop]) == 2
    assert "outside the image" in capsys.readouterr().err
    assert main(["search", str(folder / "one.png"), "--folder", str(tmp_path / "nope")]) == 2
    assert "not indexed" in capsys.readouterr().err
    assert main(["index", "--folder", str(tmp_path / "nope")]) == 2
    assert "no folder" in capsys.readouterr().err
    assert main(["dedup", str(folder), "--model", str(pixels_model), "--json"]) == 0
    dups = json.loads(capsys.readouterr().out)
    assert [g["paths"] for g in dups["groups"]] == [["copy.png", "one.png"]] and dups["groups"][0]["kind"] == "exact"
    assert main(["dedup", str(folder), "--model", str(pixels_model), "--threshold", "70"]) == 2


def _state_files(root: str) -> dict[str, bytes]:
    """The collection's files (not the lock's own) and their bytes."""
    return {
        p.name: p.read_bytes() for p in sorted(Path(root).iterdir()) if p.is_file() and not p.name.startswith(".lock")
    }


def test_a_sync_while_another_process_syncs_is_refused_and_changes_nothing(folder, data_dir):
    enc = CountingEncoder()
    first = sync(folder, enc)
    before = _state_files(first.path)
    ready = data_dir / "holding"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib; from vs_lib.locks import folder_lock\n"
            "with folder_lock(sys.argv[1], purpose='test holder'):\n"
            "    pathlib.Path(sys.argv[2]).touch(); time.sleep(60)",
            first.path,
            str(ready),
        ]
    )
    try:
        for _ in range(300):
            if ready.exists():
                break
            time.sleep(0.1)
        assert ready.exists(), "the holder process did not take the lock"
        picture(9).save(folder / "new.png")
        with pytest.raises(collection.CollectionBusyError, match="another process is updating"):
            sync(folder, enc)
        assert _state_files(first.path) == before  # nothing rewritten
    finally:
        holder.kill()
        holder.wait()
    assert sync(folder, enc).new == 1  # once the holder is gone (killed: the OS drops its lock), the sync goes ahead
