"""``train --folder DIR --positives self_supervised``: the label-free adaptation of the photo encoder.

Run on a few small sample photos with the smoke configuration (seconds); the quality of the
full recipe is measured in notebook 10 on the tuxpaint stamps.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vs_lib import collection, models
from vs_lib.collection import samples
from vs_lib.train import folder as adapt

SMALL = {"animals": ("chelsea", "cat", "horse"), "objects": ("coffee", "rocket", "clock")}


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    d = tmp_path / "data"
    monkeypatch.setenv("VS_DATA_DIR", str(d))
    monkeypatch.setenv("VS_MODELS_DIR", str(d / "models"))
    return d


@pytest.fixture
def photos(tmp_path):
    return samples.sample_folder(tmp_path / "photos", max_side=96, names=SMALL)


def test_untrained_head_equals_the_folded_photo_encoder():
    """Zero steps: the head rebuilt from the stock conv and its frozen BatchNorm is the inference head."""
    from vs_lib import photo

    w0, scale, shift = adapt._head_parts()
    head = photo.photo_encoder().network.net._conv_head
    torch.testing.assert_close(w0 * scale.view(-1, 1, 1, 1), head.weight.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shift, head.bias.detach(), atol=1e-5, rtol=1e-5)


def test_adaptation_trains_once_and_is_reused(photos, data_dir):
    with models.torch_threads(1):
        first = adapt.adapt_to_folder(photos, adapt.smoke_config(), progress=False)
        assert not first.reused and first.path.exists() and len(first.losses) == adapt.smoke_config().steps
        frozen = collection.Collection.open(folder=photos).encoder
        assert first.encoder.dim == frozen.dim and first.encoder.fingerprint != frozen.fingerprint
        again = adapt.adapt_to_folder(photos, adapt.smoke_config(), progress=False)
        assert again.reused and again.encoder.fingerprint == first.encoder.fingerprint
        other = dataclasses.replace(adapt.smoke_config(), steps=3)
        changed = adapt.adapt_to_folder(photos, other, progress=False)
    assert not changed.reused and len(changed.losses) == 3  # another configuration retrains


def test_adapted_embeddings_differ_but_stay_close(photos, data_dir):
    with models.torch_threads(1):
        result = adapt.adapt_to_folder(photos, adapt.smoke_config(), progress=False)
        coll = collection.Collection.open(folder=photos)
        images = [coll.image(p) for p in coll.paths()]
        frozen, adapted = coll.encoder.embed(images), result.encoder.embed(images)
    np.testing.assert_allclose(np.linalg.norm(adapted, axis=1), 1.0, atol=1e-5)
    cos = (frozen * adapted).sum(axis=1)
    assert cos.min() > 0.5 and cos.max() < 1 - 1e-6  # trained, not replaced by noise


def test_command_line(photos, data_dir, tmp_path, capsys):
    from vs_lib.__main__ import main

    args = ["train", "--folder", str(photos), "--profile", "smoke", "--threads", "1"]
    assert main([*args, "--positives", "clicks"]) == 2
    assert "self_supervised" in capsys.readouterr().err
    assert main(["train", "--folder", str(tmp_path / "nope"), "--positives", "self_supervised"]) == 2
    assert "no folder" in capsys.readouterr().err
    assert main([*args, "--positives", "self_supervised"]) == 0
    assert capsys.readouterr().out.startswith("trained")
    assert main([*args, "--positives", "self_supervised"]) == 0
    assert capsys.readouterr().out.startswith("reused")
    assert main(["index", "--folder", str(photos), "--model", "adapted", "--json"]) == 0
    assert '"total": 6' in capsys.readouterr().out
