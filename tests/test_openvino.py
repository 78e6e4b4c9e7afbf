"""The vision tower on OpenVINO (issue 28): the same taps as eager float32, a converted graph cached
by the weights it computes, a load that cancels at once, "auto" that never picks a slower engine,
and everything working without the optional package."""

from __future__ import annotations

import copy
import logging
import sys
import threading

import numpy as np
import pytest
import torch

import napari_clipseg as ncs
from conftest import perturb_, relative_error
from napari_clipseg.errors import RunCancelled
from napari_clipseg.modeling import backbone, openvino_engine
from napari_clipseg.precision import choice

pytest.importorskip("openvino")

CPU = torch.device("cpu")


@pytest.fixture
def openvino_on(monkeypatch, tmp_path):
    """OpenVINO switched on (the suite runs without it), with a cache folder of this test's own."""
    monkeypatch.setenv(openvino_engine.ENV, "1")
    monkeypatch.setenv("NAPARI_CLIPSEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _engine(model, cache):
    return openvino_engine.vision_engine(model.clip.visual, model.config.extract_layers, 352, cache)


def test_the_engine_gives_the_eager_float32_taps_and_logits(tiny_model, openvino_on):
    pixels = torch.randn(3, 3, 352, 352, generator=torch.Generator().manual_seed(0))
    engine = _engine(tiny_model, openvino_on)
    with torch.inference_mode():
        eager, grid = backbone.vision_taps(tiny_model.clip.visual, pixels, tiny_model.config.extract_layers)
        taps = engine.taps(pixels)
        assert engine.grid == grid and len(taps) == len(eager)
        for ours, reference in zip(taps, eager, strict=True):
            assert relative_error(reference, ours) < 1e-5  # float32 rounding, not an approximation
        fast = tiny_model.with_engine(engine)
        ids = torch.tensor([[49406, 320, 49407]] * 3)
        assert relative_error(tiny_model(pixels, input_ids=ids), fast(pixels, input_ids=ids)) < 1e-5
    assert fast.info.engine == "openvino" and fast.info.to_dict()["engine"] == "openvino"
    assert "engine" not in tiny_model.info.to_dict()  # torch's records stay as they were
    with pytest.raises(ValueError, match="the engine runs at float32; this model runs at int8"):
        tiny_model.with_precision("int8").with_engine(engine)
    assert "_vision_engine" not in fast.with_precision("int8").__dict__


def test_an_unwritable_cache_converts_without_keeping_it_and_says_so_once(tiny_model, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(openvino_engine, "_UNWRITABLE", set())
    blocked = tmp_path / "a-file"  # a read-only home: nothing can be written under it
    blocked.write_text("")
    pixels = torch.randn(1, 3, 352, 352, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger="napari_clipseg.modeling.openvino_engine"):
        for _ in range(2):
            engine = _engine(tiny_model, blocked)
            with torch.inference_mode():
                eager, _ = backbone.vision_taps(tiny_model.clip.visual, pixels, tiny_model.config.extract_layers)
                assert relative_error(eager[-1], engine.taps(pixels)[-1]) < 1e-5
    assert caplog.text.count("cannot keep the converted vision tower") == 1


def test_the_converted_tower_is_cached_by_its_weights_and_survives_a_damaged_entry(
    tiny_model, openvino_on, monkeypatch, caplog
):
    conversions = []
    real = openvino_engine._convert
    monkeypatch.setattr(openvino_engine, "_convert", lambda *a: (conversions.append(a), real(*a))[1])
    _engine(tiny_model, openvino_on)
    _engine(tiny_model, openvino_on)
    assert len(conversions) == 1  # the second load reads the converted graph
    other = perturb_(copy.deepcopy(tiny_model), seed=5)  # other weights (changed in memory): another key
    pixels = torch.randn(1, 3, 352, 352)
    engine = _engine(other, openvino_on)
    assert len(conversions) == 2
    (entry,) = [p for p in (openvino_on / "openvino").iterdir() if p.name != conversions[0][3].name]
    (entry / openvino_engine.GRAPH_NAME).write_text("<net damaged")
    with caplog.at_level(logging.WARNING):
        again = _engine(other, openvino_on)
    assert len(conversions) == 3 and "cannot be read" in caplog.text and "converting it again" in caplog.text
    with torch.inference_mode():
        np.testing.assert_allclose(again.taps(pixels)[-1], engine.taps(pixels)[-1], rtol=0, atol=1e-6)


def test_a_cancel_during_the_conversion_returns_at_once(tiny_model, openvino_on, monkeypatch):
    release, finished = threading.Event(), threading.Event()

    def slow_conversion(*_):  # a conversion that takes long
        release.wait(30)
        finished.set()

    monkeypatch.setattr(openvino_engine, "_convert", slow_conversion)
    stop = threading.Event()
    stop.set()
    try:
        with pytest.raises(RunCancelled, match="stopped on request"):
            openvino_engine.vision_engine(tiny_model.clip.visual, (1,), 352, openvino_on, stop)
        assert not finished.is_set()  # returned while the conversion still ran, not after it
    finally:
        release.set()


@pytest.fixture
def timed(monkeypatch, openvino_on):
    def set_speedups(table):
        monkeypatch.setattr(
            choice, "speedups", lambda candidates, measure=True, stop=None: {n: table.get(n, 1.0) for n in candidates}
        )

    return set_speedups


def test_auto_never_picks_a_slower_engine_or_path(timed, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(choice, "native_bfloat16", lambda device: False)
    assert "openvino" in choice.cpu_candidates(CPU)
    timed({"openvino": choice.MIN_SPEEDUP - 0.01, "int8": 1.0})  # within timing noise: torch stays
    assert choice.engine_for("float32", CPU) == "torch"
    assert ncs.load_model(tiny_model_dir, dtype="float32").info.engine == "torch"
    timed({"openvino": 2.0, "int8": 2.2})  # int8 not clearly faster than exact on OpenVINO: exact wins
    assert choice.resolve_precision("auto", CPU) == "float32" and choice.engine_for("float32", CPU) == "openvino"
    model = ncs.load_model(tiny_model_dir)  # "auto"
    assert (model.info.precision, model.info.engine) == ("float32", "openvino")
    assert "openvino" not in choice.offered_precisions(CPU)  # an engine, never a precision to pick
    timed({"openvino": 2.0, "int8": 3.0})  # clearly faster than the fastest exact path
    assert choice.resolve_precision("auto", CPU) == "int8"
    predictor = ncs.ClipSegPredictor(ncs.load_model(tiny_model_dir, dtype="float32"))
    timed({"openvino": 2.0})
    on_openvino = ncs.ClipSegPredictor(ncs.load_model(tiny_model_dir, dtype="float32"))
    image = np.random.default_rng(0).random((300, 280)).astype(np.float32)
    predictor.set_image(image)
    on_openvino.set_image(image)
    np.testing.assert_allclose(on_openvino.predict(["a cat"]), predictor.predict(["a cat"]), rtol=0, atol=1e-5)


def test_everything_works_without_openvino(monkeypatch, tiny_model_dir, tmp_path):
    monkeypatch.setenv(openvino_engine.ENV, "1")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    assert not openvino_engine.available() and "openvino" not in choice.cpu_candidates(CPU)
    assert choice.engine_for("float32", CPU) == "torch"
    model = ncs.load_model(tiny_model_dir, dtype="float32")
    assert model.info.engine == "torch"
    labels = ncs.segment(np.random.default_rng(0).random((64, 64)), ["a"], model=model)
    assert labels.shape == (64, 64)


def test_bfloat16_runs_its_tower_on_openvino_where_timed_faster(timed, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(choice, "native_bfloat16", lambda device: True)
    assert {"openvino", "openvino_bfloat16"} <= set(choice.cpu_candidates(CPU))
    timed({"int8": 2.0, "bfloat16": 1.0, "openvino": 1.0, "openvino_bfloat16": 3.0})  # torch's bf16 no faster
    assert choice.engine_for("bfloat16", CPU) == "openvino" and choice.engine_for("float32", CPU) == "torch"
    assert choice.resolve_precision("auto", CPU) == "bfloat16"  # its fastest engine beats int8
    assert "bfloat16" in choice.offered_precisions(CPU) and "openvino_bfloat16" not in choice.offered_precisions(CPU)
    model = ncs.load_model(tiny_model_dir, dtype="bfloat16")
    assert (model.info.precision, model.info.engine) == ("bfloat16", "openvino")
    exact = ncs.load_model(tiny_model_dir, dtype="float32")
    image = np.random.default_rng(1).random((200, 240)).astype(np.float32)
    fast, reference = ncs.ClipSegPredictor(model), ncs.ClipSegPredictor(exact)
    fast.set_image(image)
    reference.set_image(image)
    assert np.abs(fast.predict(["a cat"]) - reference.predict(["a cat"])).max() < 0.05  # bfloat16, not exact
