"""Precision "auto" and the accuracy guard: never an emulated (slower) path, approximations measured."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import napari_clipseg as ncs
from napari_clipseg.modeling import devices
from napari_clipseg.precision_guard import LIMITS, guard_figures, passes

CPU = torch.device("cpu")


@pytest.fixture
def cpu_flags(monkeypatch):
    """Pretend to be a CPU with the given feature flags."""

    def set_flags(*flags: str) -> None:
        monkeypatch.setattr(devices, "_cpu_flags", lambda: frozenset(flags))

    return set_flags


def test_auto_never_picks_an_emulated_path(cpu_flags, tiny_model_dir):
    cpu_flags("avx2", "fma")  # an AVX2 laptop: bfloat16 would be emulated
    assert not devices.native_bfloat16(CPU)
    assert devices.resolve_precision("auto", CPU) == devices.resolve_precision(None, CPU) == "float32"
    assert "bfloat16" not in devices.offered_precisions(CPU)
    assert ncs.load_model(tiny_model_dir).info.precision == "float32"  # "auto" is the default
    cpu_flags("avx512f", "avx512_bf16")
    assert devices.native_bfloat16(CPU) and "bfloat16" in devices.offered_precisions(CPU)
    assert devices.resolve_precision("auto", CPU) == "float32"  # bfloat16 has not passed the guard


def test_an_isa_limit_on_onednn_counts_as_no_native_bfloat16(cpu_flags, monkeypatch):
    cpu_flags("avx512f", "avx512_bf16")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # how an AVX2 machine is simulated (performance.md)
    assert not devices.native_bfloat16(CPU)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert devices.native_bfloat16(CPU)


def test_an_explicit_emulated_precision_is_warned_about_with_its_cost(cpu_flags, caplog):
    cpu_flags("avx2")
    with caplog.at_level(logging.WARNING, logger="napari_clipseg.modeling.devices"):
        assert devices.resolve_precision("bfloat16", CPU) == "bfloat16"
    assert "emulated" in caplog.text and f"{devices.EMULATED_BF16_SLOWDOWN:.1f}x slower" in caplog.text
    caplog.clear()
    cpu_flags("amx_bf16")
    with caplog.at_level(logging.WARNING, logger="napari_clipseg.modeling.devices"):
        devices.resolve_precision("bfloat16", CPU)
    assert caplog.text == ""


def test_the_dock_offers_only_native_precisions(cpu_flags, viewer, tiny_model_dir):
    from napari_clipseg._napari.widget import ClipSegWidget

    cpu_flags("avx2")
    widget = ClipSegWidget(viewer)
    widget._device.value = "cpu"
    widget._precision.reset_choices()
    assert list(widget._precision.choices) == ["auto", "float32"] and widget._precision.value == "auto"


def test_guard_figures_by_hand():
    reference = np.array([[[0.50, 0.30], [0.45, 0.10]]])
    candidate = np.array([[[0.50, 0.41], [0.39, 0.10]]])  # two pixels cross the 0.4 threshold
    figures = guard_figures(reference, candidate)
    assert figures == pytest.approx({"max_abs": 0.11, "mean_abs": 0.17 / 4, "flipped": 0.5})
    assert not passes(figures) and passes(guard_figures(reference, reference))
    assert LIMITS == {"max_abs": 0.02, "flipped": 0.005}


def test_bfloat16_on_the_tiny_model_is_measured_by_the_guard(tiny_model_dir, rng):
    """The guard's figures for bfloat16 autocast on the CPU: probabilities close, as measured."""
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    exact = ncs.ClipSegPredictor(ncs.load_model(tiny_model_dir, dtype="float32"))
    approx = ncs.ClipSegPredictor(ncs.load_model(tiny_model_dir, dtype="bfloat16"))
    exact.set_image(image)
    approx.set_image(image)
    figures = guard_figures(exact.predict(["cell"]), approx.predict(["cell"]))
    assert approx.model.autocast_dtype == torch.bfloat16
    assert 0 < figures["max_abs"] <= LIMITS["max_abs"]  # the approximate path really ran, and stayed close
