"""The decoder blocks' kernel path: op by op or torch's fused fast path, chosen by timing (issue 35)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import napari_clipseg as ncs
from napari_clipseg.modeling.decoder import composite_block
from napari_clipseg.precision import decoder_path
from napari_clipseg.precision.measurements import CACHE_ENV


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """An empty cache folder and no choice made yet in this process."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(decoder_path, "_chosen", {})
    return tmp_path


@pytest.mark.parametrize("scale", [1.0, 5000.0])  # 5000: FiLM's activations in the real model
def test_a_block_op_by_op_equals_the_fused_fast_path(scale):
    torch.manual_seed(0)
    block = nn.TransformerEncoderLayer(64, 4, 2048, 0.1, "relu", 1e-5, batch_first=True).eval()
    x = torch.randn(2, 1 + 22 * 22, 64) * scale
    with torch.inference_mode():
        fused, composite = block(x), composite_block(block, x)
    torch.testing.assert_close(composite, fused, rtol=1e-5, atol=1e-5)


def maps(model, image, prompts):
    """What a user of the predictor gets: probabilities of ``prompts`` on ``image``."""
    predictor = ncs.ClipSegPredictor(model)
    predictor.set_image(image)
    return predictor.predict(prompts)


@pytest.mark.parametrize(
    ("fused_ms", "composite_ms", "chosen"), [(5.0, 10.0, True), (9.8, 10.0, False), (12.0, 10.0, False)]
)
def test_the_fused_path_runs_only_where_it_was_timed_clearly_faster(
    cache, tiny_model, fused_ms, composite_ms, chosen, monkeypatch
):
    decoder = tiny_model.decoder
    key = decoder_path.path_key(decoder, torch.device("cpu"))
    (cache / "decoder-path.json").write_text(json.dumps({key: {"fused_ms": fused_ms, "composite_ms": composite_ms}}))
    monkeypatch.setattr(decoder_path, "time_block_paths", lambda *a: pytest.fail("timed again"))
    monkeypatch.setattr(decoder, "fused_blocks", None)
    maps(tiny_model, np.zeros((32, 32), np.uint8), ["a"])
    assert decoder.fused_blocks is chosen


def test_the_first_decode_times_both_paths_on_its_own_activations_once(cache, tiny_model, monkeypatch):
    decoder = tiny_model.decoder
    monkeypatch.setattr(decoder, "fused_blocks", None)
    timed = []
    real = decoder_path.time_block_paths
    monkeypatch.setattr(decoder_path, "time_block_paths", lambda *a: timed.append(a[1][0].shape) or real(*a))
    image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    first = maps(tiny_model, image, ["a", "b"])
    assert len(timed) == 1 and timed[0][0] == 1  # the image's own reduced taps
    figures = next(iter(json.loads((cache / "decoder-path.json").read_text()).values()))
    assert figures["fused_ms"] > 0 and figures["composite_ms"] > 0
    assert decoder.fused_blocks is (figures["fused_ms"] * decoder_path.MIN_GAIN < figures["composite_ms"])
    monkeypatch.setattr(decoder_path, "_chosen", {})  # a new session reads the figures, times nothing
    monkeypatch.setattr(decoder, "fused_blocks", None)
    again = maps(tiny_model, image, ["a", "b"])
    assert len(timed) == 1
    np.testing.assert_allclose(again, first, atol=1e-5)


def test_both_paths_give_the_same_maps(tiny_model, monkeypatch):
    image = np.random.default_rng(1).random((48, 40)).astype(np.float32)
    found = []
    for fused in (True, False):
        monkeypatch.setattr(tiny_model.decoder, "fused_blocks", fused)
        found.append(maps(tiny_model, image, ["a", "b"]))
    np.testing.assert_allclose(found[0], found[1], atol=1e-5)
