"""Precision "auto" and the accuracy guard: never an emulated (slower) path, approximations measured."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import napari_clipseg as ncs
from conftest import perturb_
from napari_clipseg.modeling import runtime
from napari_clipseg.precision import choice as devices
from napari_clipseg.precision.measurements import CACHE_ENV
from napari_clipseg.segmentation.guard import LIMITS, guard_figures, passes

CPU = torch.device("cpu")


@pytest.fixture
def cpu_flags(monkeypatch):
    """Pretend to be a CPU with the given feature flags."""

    def set_flags(*flags: str) -> None:
        monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset(flags))

    return set_flags


@pytest.fixture
def timed(monkeypatch):
    """Pretend the timed vision block ran this many times faster than float32 per path (None: not
    timed yet); paths left out ran at float32's speed."""

    def set_speedups(table: dict[str, float] | None) -> None:
        monkeypatch.setattr(
            devices,
            "speedups",
            lambda candidates, measure=True, stop=None: (
                None if table is None else {name: table.get(name, 1.0) for name in candidates}
            ),
        )

    return set_speedups


def test_auto_never_picks_an_emulated_or_slower_path(cpu_flags, timed, monkeypatch, tiny_model_dir):
    cpu_flags("avx2", "fma")  # an AVX2 laptop: bfloat16 would be emulated
    timed({"int8": 0.9, "bfloat16": 3.0})  # and int8 measured slower than float32 here
    assert not devices.native_bfloat16(CPU) and devices.cpu_candidates(CPU) == ("int8",)
    assert devices.resolve_precision("auto", CPU) == devices.resolve_precision(None, CPU) == "float32"
    assert devices.offered_precisions(CPU) == ["auto", "float32"]
    assert ncs.load_model(tiny_model_dir).info.precision == "float32"  # "auto" is the default
    timed({"int8": devices.MIN_SPEEDUP - 0.01})  # faster, but within what timing noise could fake
    assert devices.resolve_precision("auto", CPU) == "float32"
    timed({"int8": 2.0})
    assert devices.resolve_precision("auto", CPU) == "int8" and "int8" in devices.offered_precisions(CPU)
    assert ncs.load_model(tiny_model_dir).info.precision == "int8"
    cpu_flags("avx512f", "avx512_bf16")  # native bfloat16: a second candidate, the faster one wins
    timed({"int8": 2.0, "bfloat16": 2.5})
    assert devices.offered_precisions(CPU) == ["auto", "float32", "int8", "bfloat16"]
    assert devices.resolve_precision("auto", CPU) == "bfloat16"
    timed({"int8": 2.0, "bfloat16": 0.8})
    assert devices.resolve_precision("auto", CPU) == "int8" and "bfloat16" not in devices.offered_precisions(CPU)
    monkeypatch.setattr(devices, "quantized_engine", lambda: None)  # a torch without an int8 engine here
    monkeypatch.setattr(runtime, "quantized_engine", lambda: None)
    timed({"int8": 2.0})
    assert devices.resolve_precision("auto", CPU) == "float32"
    with pytest.raises(ValueError, match="no int8 engine"):
        devices.resolve_precision("int8", CPU)
    with pytest.raises(ValueError, match="CPU only"):
        devices.resolve_precision("int8", torch.device("cuda"))


def test_an_explicit_path_that_is_slower_here_is_warned_about(timed, caplog):
    timed({"int8": 0.8})
    with caplog.at_level(logging.WARNING, logger="napari_clipseg.precision.choice"):
        assert devices.resolve_precision("int8", CPU) == "int8"
    assert "int8 is not faster than float32" in caplog.text and "0.80x" in caplog.text


def test_the_cpu_is_timed_once_and_remembered(monkeypatch, tmp_path):
    from napari_clipseg.precision import timing as speed

    calls = []
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(speed, "_speedups", {})
    measured = {"float32_ms": 30.0, "int8_ms": 12.0}
    monkeypatch.setattr(speed, "_time_one_block", lambda candidates, stop=None: calls.append(candidates) or measured)
    assert speed.speedups(("int8",), measure=False) is None and not calls  # the dock asks without timing
    assert speed.speedups(("int8",)) == pytest.approx({"int8": 2.5}) and len(calls) == 1
    monkeypatch.setattr(speed, "_speedups", {})  # a new session reads the file
    assert speed.speedups(("int8",)) == pytest.approx({"int8": 2.5}) and len(calls) == 1
    (entry,) = json.loads((tmp_path / "cpu-speed.json").read_text()).items()
    assert torch.__version__ in entry[0] and entry[1] == measured


def test_an_unwritable_cache_folder_only_costs_a_new_timing(monkeypatch, tmp_path, caplog):
    from napari_clipseg.precision import timing as speed

    monkeypatch.setattr(speed, "_time_one_block", lambda candidates, stop=None: {"float32_ms": 30.0, "int8_ms": 10.0})
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "cpu-speed.json").write_text("{not json")
    monkeypatch.setenv(CACHE_ENV, str(damaged))
    monkeypatch.setattr(speed, "_speedups", {})
    assert speed.speedups(("int8",)) == pytest.approx({"int8": 3.0})
    assert list(json.loads((damaged / "cpu-speed.json").read_text()).values()) == [
        {"float32_ms": 30.0, "int8_ms": 10.0}
    ]
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocked))  # its "folder" is a file: nothing can be written there
    monkeypatch.setattr(speed, "_speedups", {})
    with caplog.at_level(logging.WARNING, logger="napari_clipseg.precision.timing"):
        assert speed.speedups(("int8",)) == pytest.approx({"int8": 3.0})
    assert "cannot keep this machine's measurements" in caplog.text


def test_the_real_timing_measures_every_candidate():
    from napari_clipseg.modeling import int8
    from napari_clipseg.precision import timing as speed

    candidates = ("int8", "bfloat16") if int8.quantized_engine() else ("bfloat16",)
    figures = speed._time_one_block(candidates)
    assert set(figures) == {"float32_ms"} | {f"{name}_ms" for name in candidates}
    assert all(ms > 0 for ms in figures.values())


def test_an_isa_limit_on_onednn_counts_as_no_native_bfloat16(cpu_flags, monkeypatch):
    cpu_flags("avx512f", "avx512_bf16")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # how an AVX2 machine is simulated (performance.md)
    assert not devices.native_bfloat16(CPU)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert devices.native_bfloat16(CPU)


def test_an_explicit_emulated_precision_is_warned_about_with_its_cost(cpu_flags, timed, caplog):
    cpu_flags("avx2")
    with caplog.at_level(logging.WARNING, logger="napari_clipseg.precision.choice"):
        assert devices.resolve_precision("bfloat16", CPU) == "bfloat16"
    assert "emulated" in caplog.text and f"{devices.EMULATED_BF16_SLOWDOWN:.1f}x slower" in caplog.text
    caplog.clear()
    cpu_flags("amx_bf16")
    timed({"bfloat16": 2.0})  # native and timed faster: nothing to warn about
    with caplog.at_level(logging.WARNING, logger="napari_clipseg.precision.choice"):
        devices.resolve_precision("bfloat16", CPU)
    assert caplog.text == ""


def test_the_dock_offers_only_faster_precisions(cpu_flags, timed, viewer, tiny_model_dir):
    from napari_clipseg._napari.widget import ClipSegWidget

    cpu_flags("avx2")
    timed({"int8": 0.9})
    widget = ClipSegWidget(viewer)
    widget._device.value = "cpu"
    widget._precision.reset_choices()
    assert list(widget._precision.choices) == ["auto", "float32"] and widget._precision.value == "auto"
    timed(None)  # not timed yet: offered (loading times it, in the worker), and never timed in the GUI thread
    widget._precision.reset_choices()
    assert list(widget._precision.choices) == ["auto", "float32", "int8"]


def test_guard_figures_by_hand():
    reference = np.array([[[0.50, 0.30], [0.45, 0.10]]])
    candidate = np.array([[[0.50, 0.41], [0.39, 0.10]]])  # two pixels cross the 0.4 threshold
    figures = guard_figures(reference, candidate)
    expected = {"max_abs": 0.11, "mean_abs": 0.17 / 4, "flipped": 0.5, "flipped_labels": 0.5}
    assert {k: figures[k] for k in expected} == pytest.approx(expected)
    assert figures["p999_abs"] == pytest.approx(np.quantile([0, 0.11, 0.06, 0], 0.999))
    assert figures["flipped_any_threshold"] == 0.5  # at 0.4 two pixels change, never more
    assert not passes(figures) and passes(guard_figures(reference, reference))
    assert LIMITS == {"flipped": 0.005, "flipped_any_threshold": 0.005, "mean_abs": 0.002}
    shifted = guard_figures(reference, reference + np.array([[[0.0, 0.0], [0.0, 0.25]]]))  # crosses 0.2 and 0.3 only
    assert shifted["flipped"] == 0 and shifted["flipped_any_threshold"] == 0.25
    two = np.stack([reference[0], reference[0] + 1e-6])  # two prompts with the same map: labels tie
    assert guard_figures(two, two[::-1])["flipped"] == 0 < guard_figures(two, two[::-1])["flipped_labels"]


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_approximate_paths_on_the_tiny_model_are_within_the_guard(tiny_model_dir, rng, precision):
    """The approximate path really runs (the maps differ) and stays within the guard's limits."""
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    exact = ncs.ClipSegPredictor(ncs.load_model(tiny_model_dir, dtype="float32"))
    approx = ncs.ClipSegPredictor(ncs.load_model(tiny_model_dir, dtype=precision))
    exact.set_image(image)
    approx.set_image(image)
    figures = guard_figures(exact.predict(["cell", "membrane"]), approx.predict(["cell", "membrane"]))
    assert figures["max_abs"] > 0 and passes(figures), figures


def test_projected_attention_is_multihead_attention(rng):
    from napari_clipseg.modeling.int8 import ProjectedAttention

    torch.manual_seed(0)
    attention = perturb_(torch.nn.MultiheadAttention(32, 4, batch_first=True)).eval()
    x = torch.randn(2, 7, 32)
    causal = torch.zeros(7, 7).masked_fill_(torch.ones(7, 7, dtype=torch.bool).triu_(1), -1e9)
    per_sequence = causal.expand(2 * 4, 7, 7).clone()
    per_sequence[4:, :, 5:] = -1e9  # the second sequence is padded after 5 tokens
    projected = ProjectedAttention(attention)
    for mask in (None, causal, per_sequence):
        expected = attention(x, x, x, need_weights=False, attn_mask=mask)[0]
        torch.testing.assert_close(projected(x, x, x, attn_mask=mask)[0], expected, atol=1e-5, rtol=1e-5)


def _maps(model, image) -> np.ndarray:
    predictor = ncs.ClipSegPredictor(model)
    predictor.set_image(image)
    return predictor.predict(["cell"])


def test_an_int8_model_saves_its_exact_float32_weights(tiny_model_dir, tmp_path, rng):
    """int8 is how the towers run, not what the model is: saved weights are the float32 ones."""
    from safetensors.torch import load_file

    exact, fast = ncs.load_model(tiny_model_dir, dtype="float32"), ncs.load_model(tiny_model_dir, dtype="int8")
    assert fast.towers is not fast.clip and fast.state_dict().keys() == exact.state_dict().keys()
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    before = _maps(fast, image)
    saved = Path(ncs.save_pretrained(fast, tmp_path / "again"))
    original = load_file(Path(tiny_model_dir) / "model.safetensors")
    written = load_file(saved / "model.safetensors")
    assert written.keys() == original.keys()
    assert all(torch.equal(tensor, original[name]) for name, tensor in written.items())
    np.testing.assert_array_equal(_maps(ncs.load_model(saved, dtype="int8"), image), before)
    np.testing.assert_array_equal(_maps(ncs.load_model(saved, dtype="float32"), image), _maps(exact, image))


def test_with_precision_shares_the_weights_not_the_model(tiny_model):
    fast = tiny_model.with_precision("int8")
    assert fast.clip is tiny_model.clip and fast.decoder is tiny_model.decoder  # no copy of the weights
    assert (fast.info.precision, tiny_model.info.precision) == ("int8", "float32")
    assert fast.towers is not fast.clip and tiny_model.towers is tiny_model.clip
    fast.decoder = torch.nn.Identity()  # replacing a part of one leaves the other whole
    assert isinstance(tiny_model.decoder, ncs.modeling.ClipSegDecoder)


def test_auto_checks_an_approximate_path_on_the_loaded_weights(timed, monkeypatch, tiny_model_dir, caplog, tmp_path):
    """The guard also runs on the user's own weights: a failing path falls back to float32, once."""
    from napari_clipseg.segmentation import precision_check as model_check

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))  # nothing checked on this machine yet
    timed({"int8": 2.0})
    figures = model_check.guard_on_model(ncs.load_model(tiny_model_dir, dtype="int8"))  # the real check
    assert set(figures) >= set(LIMITS) and figures["mean_abs"] > 0
    checked = []

    def failing(model, stop=None):
        checked.append(model.info.precision)
        return {**figures, "flipped": 0.2}

    monkeypatch.setattr(model_check, "guard_on_model", failing)
    with caplog.at_level(logging.WARNING, logger="napari_clipseg.segmentation.precision_check"):
        assert ncs.load_model(tiny_model_dir).info.precision == "float32"
    assert "int8 failed the accuracy guard on these weights (checked now: 20.00 % of mask pixels" in caplog.text
    assert ncs.load_model(tiny_model_dir).info.precision == "float32" and checked == ["int8"]  # remembered
    assert ncs.load_model(tiny_model_dir, dtype="int8").info.precision == "int8"  # an explicit choice is kept
    monkeypatch.setattr(model_check, "guard_on_model", lambda model, stop=None: [][0])  # a check that cannot run
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "elsewhere"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="napari_clipseg.segmentation.precision_check"):
        assert ncs.load_model(tiny_model_dir).info.precision == "float32"
    assert "could not check int8" in caplog.text


class StopAfter:
    """A stop flag that reads as set from its ``n``-th look on: a Cancel pressed mid-stage."""

    def __init__(self, n: int) -> None:
        self.n, self.looks = n, 0

    def is_set(self) -> bool:
        self.looks += 1
        return self.looks >= self.n


def test_building_the_int8_copy_stops_between_blocks(tiny_model):
    from napari_clipseg.errors import RunCancelled
    from napari_clipseg.modeling.int8 import _quantize_linears, quantize_towers

    stop = StopAfter(2)
    with pytest.raises(RunCancelled):
        quantize_towers(tiny_model.clip, stop)
    assert stop.looks == 2  # looked before each block, not once at the end
    # block by block gives the same int8 weights as the whole towers at once
    whole = _quantize_linears(quantize_towers(tiny_model.clip, None))
    blockwise = quantize_towers(tiny_model.clip)

    def packed(m):
        return [(n, x.weight().int_repr()) for n, x in m.named_modules() if callable(getattr(x, "weight", None))]

    assert [n for n, _ in packed(whole)] == [n for n, _ in packed(blockwise)] and len(packed(whole)) > 4
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(packed(whole), packed(blockwise), strict=True))


def test_the_one_off_timing_stops_between_runs():
    from napari_clipseg.errors import RunCancelled
    from napari_clipseg.precision import timing

    stop = StopAfter(3)
    with pytest.raises(RunCancelled):
        timing._time_one_block(("int8",), stop)
    assert stop.looks == 3


def test_the_check_on_the_weights_stops_between_blocks_and_never_falls_back(
    timed, tiny_model_dir, tmp_path, monkeypatch
):
    from napari_clipseg.errors import RunCancelled
    from napari_clipseg.segmentation import precision_check

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))  # nothing checked yet: the check runs
    model = ncs.load_model(tiny_model_dir, dtype="int8")
    stop = StopAfter(3)
    with pytest.raises(RunCancelled):
        precision_check.verified(model, stop)  # a Cancel is not "the check could not run": no float32 fallback
    assert stop.looks == 3 and not (tmp_path / "precision-checks.json").exists()


class StopIn:
    """A stop flag that reads as set once it is looked at from inside the named function."""

    def __init__(self, function: str) -> None:
        self.function, self.seen = function, False

    def is_set(self) -> bool:
        import traceback

        self.seen = self.seen or any(frame.name == self.function for frame in traceback.extract_stack())
        return self.seen


@pytest.mark.parametrize(
    "stage", ["read_state_dict", "check_finite", "_time_one_block", "quantize_towers", "file_sha256", "guard_on_model"]
)
def test_loading_at_auto_stops_in_every_stage(tiny_model_dir, tmp_path, monkeypatch, stage):
    """A Cancel during any stage of an auto load (reading, the timing, the int8 copy, the check on
    the weights) ends the load there, with nothing remembered."""
    from napari_clipseg.errors import RunCancelled
    from napari_clipseg.precision import choice, timing

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))  # a new machine: every stage runs
    monkeypatch.setattr(timing, "_speedups", {})
    monkeypatch.setattr(choice, "speedups", timing.speedups)  # the real timing (the suite pins it)
    monkeypatch.setattr(choice, "MIN_SPEEDUP", 0.0)  # int8 is chosen however the timing comes out
    stop = StopIn(stage)
    with pytest.raises(RunCancelled):
        ncs.ModelSpec(str(tiny_model_dir)).load(stop=stop)
    assert stop.seen and not (tmp_path / "precision-checks.json").exists()


def _auto_int8(monkeypatch, tmp_path, timed):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    timed({"int8": 2.0})


def test_the_auto_choice_is_one_line_in_words_and_the_record_says_checked_now_or_remembered(
    timed, monkeypatch, tiny_model_dir, tmp_path, caplog
):
    _auto_int8(monkeypatch, tmp_path, timed)
    with caplog.at_level(logging.INFO, logger="napari_clipseg"):
        first = ncs.load_model(tiny_model_dir)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("precision auto"))
    assert line.startswith("precision auto: int8 (2.0x faster than float32 in a timed vision block here; checked now")
    assert str(tmp_path) in line
    assert "{" not in caplog.text  # no raw JSON
    assert first.info.to_dict()["precision_checked"] == "now"
    assert ncs.load_model(tiny_model_dir).info.to_dict()["precision_checked"] == "remembered"
    assert "precision_checked" not in ncs.load_model(tiny_model_dir, dtype="int8").info.to_dict()  # explicit: unchecked
    timed({"int8": 1.05})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="napari_clipseg"):
        assert ncs.load_model(tiny_model_dir).info.precision == "float32"
    assert (
        "precision auto: float32 (no approximate path ran 1.2x faster than float32 in a timed vision block"
        in caplog.text
    )
    assert "int8 1.05x" in caplog.text


@pytest.mark.parametrize(
    "damage",
    [
        "{not json",
        "[1, 2]",
        '{"KEY": {}}',  # an entry without its figures
        '{"KEY": {"float32_ms": "fast", "int8_ms": 1}}',  # text for a number
        '{"KEY": {"float32_ms": 30.0}}',  # a figure missing
        '{"KEY": {"float32_ms": NaN, "int8_ms": 10}}',
        '{"KEY": {"float32_ms": true, "int8_ms": 10}}',
    ],
)
def test_a_damaged_timing_file_is_ignored_by_name_and_measured_again(monkeypatch, tmp_path, caplog, damage):
    from napari_clipseg.precision import timing as speed

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(speed, "_speedups", {})
    key = speed.machine_key(("int8",))
    (tmp_path / "cpu-speed.json").write_text(damage.replace("KEY", key))
    monkeypatch.setattr(speed, "_time_one_block", lambda candidates, stop=None: {"float32_ms": 30.0, "int8_ms": 10.0})
    with caplog.at_level(logging.WARNING, logger="napari_clipseg"):
        assert speed.speedups(("int8",)) == pytest.approx({"int8": 3.0})
    assert str(tmp_path / "cpu-speed.json") in caplog.text and "ignored" in caplog.text
    assert json.loads((tmp_path / "cpu-speed.json").read_text())[key] == {"float32_ms": 30.0, "int8_ms": 10.0}


def test_a_damaged_precision_check_entry_is_checked_again(timed, monkeypatch, tiny_model_dir, tmp_path, caplog):
    from napari_clipseg.segmentation import precision_check

    _auto_int8(monkeypatch, tmp_path, timed)
    ncs.load_model(tiny_model_dir)
    path = tmp_path / "precision-checks.json"
    (key,) = json.loads(path.read_text())
    path.write_text(json.dumps({key: {}}))  # was: KeyError 'flipped'
    checks = []
    real = precision_check.guard_on_model
    monkeypatch.setattr(precision_check, "guard_on_model", lambda m, stop=None: checks.append(1) or real(m, stop))
    with caplog.at_level(logging.WARNING, logger="napari_clipseg"):
        assert ncs.load_model(tiny_model_dir).info.precision == "int8"
    assert checks == [1] and "damaged entry" in caplog.text and str(path) in caplog.text


def test_a_forged_check_of_other_weights_or_an_older_check_is_not_trusted(timed, monkeypatch, tiny_model, tmp_path):
    from napari_clipseg.segmentation import precision_check

    _auto_int8(monkeypatch, tmp_path, timed)
    model = tiny_model.with_precision("int8")
    key = f"{precision_check._weights_key(model)} | {precision_check.machine_key(('int8',))}"
    passing = {"flipped": 0.0, "flipped_any_threshold": 0.0, "mean_abs": 0.0}
    (tmp_path / "precision-checks.json").write_text(
        json.dumps({key: passing})
    )  # no check version: an old or forged entry
    monkeypatch.setattr(precision_check, "guard_on_model", lambda m, stop=None: {**passing, "flipped": 0.2})
    assert precision_check.verified(model).info.precision == "float32"  # checked anew, and it fails


def test_a_fifo_or_a_huge_file_in_place_of_the_timing_is_never_read(monkeypatch, tmp_path, caplog):
    import os

    from napari_clipseg.precision import measurements

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    os.mkfifo(tmp_path / "cpu-speed.json")  # reading it would block for ever
    with caplog.at_level(logging.WARNING, logger="napari_clipseg"):
        found = measurements.remembered("cpu-speed.json", "k", lambda: {"a": 1.0}, ["a"])
    assert found.figures == {"a": 1.0} and found.now and "not a regular file" in caplog.text
    (tmp_path / "precision-checks.json").write_bytes(b" " * (measurements.MAX_BYTES + 1))
    assert measurements.remembered("precision-checks.json", "k", lambda: {"a": 2.0}, ["a"]).figures == {"a": 2.0}


def test_an_explicit_slower_path_is_said_on_the_command_line(timed, tiny_model_dir, tmp_path, capsys):
    """An explicit ``--precision int8`` where this machine timed int8 slower loads with a word on stderr."""
    import tifffile

    from napari_clipseg.cli import main

    timed({"int8": 0.8})
    tifffile.imwrite(tmp_path / "image.tif", np.zeros((64, 64), np.uint8))
    out = tmp_path / "labels.tif"
    assert (
        main(
            [
                "segment",
                str(tmp_path / "image.tif"),
                "-p",
                "x",
                "-m",
                str(tiny_model_dir),
                "--precision",
                "int8",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert "int8 is not faster than float32 on this CPU" in capsys.readouterr().err


GUARD_HELD_TO_AVX2 = """
import sys, numpy as np, torch, napari_clipseg as ncs
from napari_clipseg.segmentation.guard import guard_figures, passes
assert torch.backends.cpu.get_cpu_capability() == "AVX2", torch.backends.cpu.get_cpu_capability()
image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
maps = []
for precision in ("float32", "int8"):
    predictor = ncs.ClipSegPredictor(ncs.load_model(sys.argv[1], dtype=precision))
    predictor.set_image(image)
    maps.append(predictor.predict(["cell", "membrane"]))
figures = guard_figures(*maps)
assert figures["max_abs"] > 0 and passes(figures), figures
"""


def test_int8_stays_within_the_guard_held_to_avx2(tiny_model_dir, tmp_path):
    """The guard on the other kind of CPU in the tests' reach: every kernel library held to AVX2."""
    import os
    import subprocess
    import sys

    env = os.environ | {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
        CACHE_ENV: str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", GUARD_HELD_TO_AVX2, str(tiny_model_dir)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
