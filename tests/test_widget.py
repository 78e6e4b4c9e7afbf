"""The dock widget, driven as a user would: type, click Run, wait for the worker, inspect layers.

The model is the tiny random checkpoint saved to a temporary folder and typed in as the source.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from qtpy.QtCore import Qt

import napari_clipseg as ncs
from conftest import TIMEOUT, click_run, labels_layers
from napari_clipseg._napari.widget import ClipSegWidget
from napari_clipseg.io.export import read_array
from napari_clipseg.io.records import class_names, read_record, validate_record
from napari_clipseg.segmentation.predictor import ClipSegPredictor


def read_back(record):
    """A layer's record must be a valid record."""
    return validate_record(record, "layer metadata")


def test_run_makes_a_labels_layer_in_the_image_frame(widget, viewer, astronaut, qtbot):
    widget._prompts.value = "person, flag\nrocket"
    widget._threshold.value = 0.5
    click_run(widget, qtbot)
    (layer,) = labels_layers(viewer)
    assert layer.name == "clipseg: person, flag, rocket"
    assert layer.data.shape == (512, 512) and layer.data.dtype == np.uint8
    np.testing.assert_array_equal(layer.scale, astronaut.scale)
    np.testing.assert_array_equal(layer.translate, astronaut.translate)
    assert tuple(str(u) for u in layer.units) == tuple(str(u) for u in astronaut.units)
    assert list(layer.features["class"]) == ["background", "person", "flag", "rocket"]
    meta = read_back(layer.metadata["clipseg"])
    assert class_names(meta) == ["person", "flag", "rocket"] and meta["model"]["source"] == widget._source.value
    assert widget._classes.value == "1 = person  2 = flag  3 = rocket"
    # the labels are exactly the core's result for the same inputs
    pred = ClipSegPredictor(ncs.load_model(widget._source.value, dtype="float32"))
    pred.set_image(astronaut.data)
    np.testing.assert_array_equal(layer.data, ncs.labels_from_probabilities(pred.predict(class_names(meta)), 0.5))


def test_threshold_and_min_size_relabel_without_the_model(widget, viewer, astronaut, qtbot, monkeypatch):
    widget._prompts.value = "person, rocket"
    click_run(widget, qtbot)
    result, layer = widget._results.last.result, widget._results.last.layer
    calls = []
    for name in ("set_image", "predict", "predict_logits", "embed_prompts"):
        original = getattr(ClipSegPredictor, name)
        monkeypatch.setattr(
            ClipSegPredictor, name, lambda self, *a, _o=original, **k: calls.append(1) or _o(self, *a, **k)
        )
    threshold = float(np.quantile(result.probabilities, 0.7))
    widget._threshold.value = round(threshold, 2)
    widget._min_size.value = 20
    expected = ncs.labels_from_probabilities(result.probabilities, round(threshold, 2), 20)
    np.testing.assert_array_equal(layer.data, expected)
    assert calls == [] and layer.metadata["clipseg"]["options"]["min_size"] == 20


def hold(monkeypatch, owner, name: str) -> tuple[threading.Event, threading.Event]:
    """Make ``owner.name`` wait, once entered, until released: to act while the worker is inside it."""
    entered, release = threading.Event(), threading.Event()
    original = getattr(owner, name)

    def held(*args, **kwargs):
        entered.set()
        release.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, held)
    return entered, release


@pytest.fixture
def blocked_set_image(monkeypatch):
    """Hold the worker inside the image encoding until released, to act while it runs."""
    return hold(monkeypatch, ClipSegPredictor, "encode")


@pytest.mark.parametrize("stage", ["load_exact", "embed_prompts", "encode", "decode"])
def test_cancel_at_every_stage_leaves_no_layer(stage, widget, viewer, astronaut, qtbot, monkeypatch):
    """Cancel while the model loads, the prompts are embedded, the image encoded, or the maps decoded."""
    from napari_clipseg.modeling import weights

    entered, release = hold(monkeypatch, weights if stage == "load_exact" else ClipSegPredictor, stage)
    widget._prompts.value = "person"
    widget._run_btn.native.click()
    qtbot.waitUntil(entered.is_set, timeout=TIMEOUT)
    assert widget._cancel_btn.enabled and not widget._run_btn.enabled
    widget._cancel_btn.native.click()
    release.set()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT)
    assert labels_layers(viewer) == [] and "Cancelled" in widget._status.value
    assert widget._run_btn.enabled and widget._progress.value == 0


def test_second_run_is_refused_while_one_runs(widget, viewer, astronaut, qtbot, blocked_set_image, messages):
    entered, release = blocked_set_image
    widget._prompts.value = "person"
    widget._run_btn.native.click()
    qtbot.waitUntil(entered.is_set, timeout=TIMEOUT)
    widget.run()  # e.g. Enter pressed again
    assert any("already in progress" in text for _, text in messages)
    release.set()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT)
    assert len(labels_layers(viewer)) == 1


def test_rerun_never_overwrites_edits(widget, viewer, astronaut, qtbot):
    widget._prompts.value = "person"
    click_run(widget, qtbot)
    (first,) = labels_layers(viewer)
    click_run(widget, qtbot)  # untouched: updated in place, no layer spam
    assert labels_layers(viewer) == [first]
    first.paint((100, 100), 7)  # the user paints
    edited = first.data.copy()
    assert edited[100, 100] == 7
    widget._threshold.value = 0.0  # the slider no longer touches an edited layer
    np.testing.assert_array_equal(first.data, edited)
    assert "your edits" in widget._status.value
    click_run(widget, qtbot)
    layers = labels_layers(viewer)
    assert len(layers) == 2 and layers[0] is first
    np.testing.assert_array_equal(first.data, edited)
    assert "edits" in widget._status.value and layers[1].name != first.name


def test_export_masks_round_trip_and_no_silent_overwrite(widget, viewer, astronaut, qtbot, tmp_path, dialogs):
    widget._prompts.value = "person, rocket"
    widget._threshold.value = 0.5
    click_run(widget, qtbot)
    (layer,) = labels_layers(viewer)
    dialogs.folders += [str(tmp_path)] * 3
    widget._export_btn.native.click()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["01_person.tif", "02_rocket.tif", "clipseg.json", "labels.tif"]
    np.testing.assert_array_equal(read_array(tmp_path / "labels.tif"), layer.data)
    np.testing.assert_array_equal(read_array(tmp_path / "02_rocket.tif") > 0, layer.data == 2)
    record = read_record(tmp_path / "clipseg.json")
    assert class_names(record) == ["person", "rocket"] and record["model"]["sha256"]
    assert record["files"]["masks"] == {"1": "01_person.tif", "2": "02_rocket.tif"} and record["edited"] is False

    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    dialogs.answers.append(False)  # "Overwrite?" -> No
    widget._export_btn.native.click()
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    assert "cancelled" in widget._status.value
    layer.paint((0, 0), 2)
    dialogs.answers.append(True)  # -> Yes
    widget._export_btn.native.click()
    np.testing.assert_array_equal(read_array(tmp_path / "labels.tif"), layer.data)
    assert read_record(tmp_path / "clipseg.json")["edited"] is True


def test_no_image_layer(widget, viewer, qtbot, messages):
    widget._prompts.value = "cat"
    widget._run_btn.native.click()
    assert messages and messages[-1][0] == "warning" and "Image layer" in messages[-1][1]
    assert not widget.is_running


def test_labels_layer_selected(widget, viewer, qtbot, messages):
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="my labels")
    widget._prompts.value = "cat"
    widget._run_btn.native.click()
    assert "'my labels' is a Labels layer" in messages[-1][1]


def test_empty_prompt(widget, viewer, astronaut, qtbot, messages):
    widget._prompts.value = " , \n "
    widget._run_btn.native.click()
    assert "at least one prompt" in messages[-1][1] and not widget.is_running


def test_tiny_image_is_reported_not_crashing(widget, viewer, qtbot, messages):
    viewer.add_image(np.ones((1, 1), np.float32), name="dot")
    widget._prompts.value = "cat"
    click_run(widget, qtbot)
    assert messages[-1][0] == "error" and "at least 16x16" in messages[-1][1]
    assert labels_layers(viewer) == [] and widget._run_btn.enabled


def test_offline_model_miss_is_reported(widget, viewer, astronaut, qtbot, messages):
    widget._source.value = "CIDAS/clipseg-rd64-refined"
    widget._prompts.value = "cat"
    click_run(widget, qtbot)
    assert messages[-1][0] == "error" and "HF_HUB_OFFLINE=1" in messages[-1][1]


def test_enter_runs_and_shift_enter_adds_a_line(widget, viewer, astronaut, qtbot):
    widget._prompts.value = "person"
    qtbot.keyClick(widget._prompts.native, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    assert not widget.is_running and labels_layers(viewer) == []
    qtbot.keyClick(widget._prompts.native, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: len(labels_layers(viewer)) == 1 and not widget.is_running, timeout=TIMEOUT)


def test_image_selector_follows_the_active_layer(widget, viewer, astronaut):
    other = viewer.add_image(np.zeros((32, 32)), name="other")
    viewer.layers.selection.active = other
    assert widget._image.value is other
    viewer.layers.selection.active = astronaut
    assert widget._image.value is astronaut


def test_probability_maps_as_image_layers(widget, viewer, astronaut, qtbot):
    widget._prompts.value = "person, rocket"
    widget._show_probs.value = True
    click_run(widget, qtbot)
    probs = [layer for layer in viewer.layers if layer.name.startswith("clipseg p: ")]
    assert [p.name for p in probs] == ["clipseg p: person", "clipseg p: rocket"]
    np.testing.assert_array_equal(probs[0].data, widget._results.last.result.probabilities[0])
    np.testing.assert_array_equal(probs[0].scale, astronaut.scale)


def test_stack_segments_the_current_plane(widget, viewer, qtbot, rng):
    stack = rng.integers(0, 4000, (4, 48, 64), dtype=np.uint16)
    viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(0, 2)
    widget._prompts.value = "cell"
    widget._threshold.value = 0.0
    click_run(widget, qtbot)
    (layer,) = labels_layers(viewer)
    assert layer.data.shape == (4, 48, 64) and layer.metadata["clipseg"]["planes"] == [[2]]
    assert np.all(layer.data[2] == 1) and not layer.data[[0, 1, 3]].any()


def test_settings_persist_between_sessions(widget, viewer, make_napari_viewer):
    widget._threshold.value = 0.63
    widget._device.value = "cpu"
    widget._prompts.value = "nucleus"
    widget._options.tiling.value = "both"
    widget._options.region.value = "whole stack"
    widget._options.overlap.value = 60
    widget._save_settings()
    again = ClipSegWidget(viewer)
    assert (again._options.tiling.value, again._options.region.value, again._options.overlap.value) == (
        "both",
        "whole stack",
        60,
    )
    assert again._threshold.value == pytest.approx(0.63) and again._device.value == "cpu"
    assert again._prompts.value == "nucleus" and again._source.value == widget._source.value


def test_probability_maps_are_never_offered_as_input(widget, viewer, astronaut, qtbot):
    widget._prompts.value = "person"
    widget._show_probs.value = True
    click_run(widget, qtbot)
    probability = viewer.layers["clipseg p: person"]
    viewer.layers.selection.active = probability
    assert widget._image.value is astronaut
    assert [name for name, _ in widget._image_choices()] == ["astronaut"]


def test_show_probabilities_ignores_a_deleted_result(widget, viewer, astronaut, qtbot):
    widget._prompts.value = "person"
    click_run(widget, qtbot)
    viewer.layers.remove("clipseg: person")
    widget._show_probs.value = True
    assert [layer.name for layer in viewer.layers] == ["astronaut"]


def test_model_is_loaded_once_and_reloaded_only_when_settings_change(widget, viewer, astronaut, qtbot, monkeypatch):
    from napari_clipseg.modeling import weights

    loads = []
    original = weights.load_exact
    monkeypatch.setattr(weights, "load_exact", lambda *a, **k: loads.append(a) or original(*a, **k))
    widget._prompts.value = "person"
    click_run(widget, qtbot)
    widget._prompts.value = "rocket"
    click_run(widget, qtbot)
    assert len(loads) == 1
    widget._device.value = "cpu"  # "auto" is this machine's CPU: the same model
    click_run(widget, qtbot)
    assert len(loads) == 1
    other = next(p for p in widget._precision.choices if p != widget._precision.value)
    widget._precision.value = other  # another precision is another model instance
    click_run(widget, qtbot)
    assert len(loads) == 2


def test_out_of_memory_becomes_advice(widget, viewer, astronaut, qtbot, monkeypatch, messages):
    import torch

    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(ClipSegPredictor, "encode", oom)
    widget._prompts.value = "person"
    click_run(widget, qtbot)
    level, text = messages[-1]
    assert level == "error" and "Out of memory" in text and "crop" in text and "tiled" in text
    assert labels_layers(viewer) == []


def test_whole_stack_then_reprompt_without_the_backbone(widget, viewer, qtbot, rng):
    stack = rng.integers(0, 4000, (4, 40, 56), dtype=np.uint16)
    viewer.add_image(stack, name="stack")
    widget._options.region.value = "whole stack"
    widget._prompts.value = "cell"
    widget._threshold.value = 0.0
    click_run(widget, qtbot)
    layer = viewer.layers["clipseg: cell"]
    assert np.all(layer.data == 1) and layer.metadata["clipseg"]["planes"] == [[0], [1], [2], [3]]
    calls = []
    hook = widget._runner.predictor.model.clip.visual.conv1.register_forward_hook(lambda *_: calls.append(1))
    try:
        widget._prompts.value = "nucleus"
        click_run(widget, qtbot)
    finally:
        hook.remove()
    assert calls == [] and viewer.layers["clipseg: nucleus"].data.shape == (4, 40, 56)


def test_large_image_is_tiled_in_the_widget(widget, viewer, qtbot, rng):
    viewer.add_image(rng.integers(0, 255, (760, 900, 3), dtype=np.uint8), rgb=True, name="big")
    widget._options.tiling.value = "tiled"
    widget._options.overlap.value = 60
    widget._prompts.value = "cell"
    click_run(widget, qtbot)
    meta = viewer.layers["clipseg: cell"].metadata["clipseg"]
    assert (
        meta["mode"] == "tiled"
        and meta["options"]["overlap"] == 60
        and viewer.layers["clipseg: cell"].data.shape == (760, 900)
    )
    assert widget._progress.value == widget._progress.max


def test_channel_choice_and_contrast_limits(widget, viewer, qtbot, messages, rng, tiny_model_dir):
    def segmented(data, **options):
        return ncs.run(
            ncs.iter_segment(data, ["cell" if data.ndim == 3 else "nucleus"], predictor, ncs.SegmentOptions(**options))
        )

    rgb = viewer.add_image(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), rgb=True, name="rgb")
    widget._image.value = rgb
    widget._prompts.value = "cell"
    widget._options.channels.value = "0, 9"
    widget._run_btn.native.click()
    assert "three indices" in messages[-1][1] and not widget.is_running
    widget._options.channels.value = "2, 1, -1"
    widget._threshold.value = 0.46
    click_run(widget, qtbot)
    predictor = ncs.ClipSegPredictor(ncs.load_model(tiny_model_dir, dtype="float32"))
    expected = segmented(rgb.data, rgb=True, channels=(2, 1, -1), threshold=0.46)
    np.testing.assert_array_equal(viewer.layers["clipseg: cell"].data, expected.labels)

    grey = viewer.add_image(rng.integers(0, 4000, (40, 40), dtype=np.uint16), name="grey", contrast_limits=(0, 8000))
    widget._image.value = grey
    widget._options.channels.value = ""
    widget._options.contrast.value = True
    widget._prompts.value = "nucleus"
    click_run(widget, qtbot)
    expected = segmented(grey.data, intensity=(0, 8000), threshold=0.46)
    np.testing.assert_array_equal(viewer.layers["clipseg: nucleus"].data, expected.labels)


def test_multiscale_layer_at_a_chosen_pyramid_level(widget, viewer, qtbot, rng):
    from skimage.transform import rescale

    full = rng.random((704, 704)).astype(np.float32)
    pyramid = [full, rescale(full, 0.5, anti_aliasing=True).astype(np.float32)]
    layer = viewer.add_image(pyramid, multiscale=True, name="slide", scale=(0.5, 0.5), translate=(100, 200))
    widget._image.value = layer
    widget._prompts.value = "tissue"
    widget._options.level.value = 1
    click_run(widget, qtbot)
    result = viewer.layers["clipseg: tissue"]
    assert result.data.shape == (352, 352)
    np.testing.assert_allclose(result.scale, (1.0, 1.0))
    np.testing.assert_allclose(result.translate, (100.25, 200.25))
    widget._options.level.value = 0
    widget._prompts.value = "tissue, cells"
    click_run(widget, qtbot)
    assert viewer.layers["clipseg: tissue, cells"].data.shape == (704, 704)


def test_channel_axis_of_a_multichannel_layer(widget, viewer, qtbot, rng, messages):
    layer = viewer.add_image(
        rng.integers(0, 4000, (2, 48, 64), dtype=np.uint16),
        name="two channels",
        scale=(1, 0.5, 0.25),
        units=("", "µm", "µm"),
    )
    widget._image.value = layer
    widget._prompts.value = "cell"
    widget._options.channel_axis.value = 2
    widget._run_btn.native.click()
    assert "must be one of the 1 leading axes" in messages[-1][1]
    widget._options.channel_axis.value = 0
    click_run(widget, qtbot)
    result = viewer.layers["clipseg: cell"]
    assert result.data.shape == (48, 64)
    np.testing.assert_allclose(result.scale, (0.5, 0.25))


def _core_probabilities(model_dir, image, prompts):
    predictor = ClipSegPredictor(ncs.load_model(model_dir, dtype="float32"))
    predictor.set_image(image)
    return predictor.predict(prompts)


def test_a_new_image_of_the_same_shape_never_gets_the_old_features(widget, viewer, qtbot, rng, tiny_model_dir):
    """Close an image, open another of the same shape and dtype: its own features, its own masks."""
    first = viewer.add_image(rng.integers(0, 4000, (64, 80), dtype=np.uint16), name="first")
    widget._prompts.value = "cell"
    click_run(widget, qtbot)
    viewer.layers.remove(first)
    del first
    second = viewer.add_image(rng.integers(0, 4000, (64, 80), dtype=np.uint16), name="second")
    widget._image.value = second
    click_run(widget, qtbot)
    probabilities = widget._results.last.result.probabilities
    np.testing.assert_allclose(probabilities, _core_probabilities(tiny_model_dir, second.data, ["cell"]), atol=1e-6)


def test_an_image_edited_in_place_is_encoded_again(widget, viewer, qtbot, rng, tiny_model_dir):
    image = viewer.add_image(rng.integers(0, 4000, (64, 80), dtype=np.uint16), name="img")
    widget._prompts.value = "cell"
    click_run(widget, qtbot)
    before = widget._results.last.result.probabilities.copy()
    image.data[:32] = rng.integers(0, 4000, (32, 80), dtype=np.uint16)  # same array object, new pixels
    image.refresh()
    click_run(widget, qtbot)
    after = widget._results.last.result.probabilities
    np.testing.assert_allclose(after, _core_probabilities(tiny_model_dir, image.data, ["cell"]), atol=1e-6)
    assert np.abs(after - before).max() > 1e-4


@pytest.mark.parametrize("change", ["closed", "replaced"])
def test_the_image_closed_or_replaced_during_a_run(change, widget, viewer, qtbot, rng, blocked_set_image):
    entered, release = blocked_set_image
    image = viewer.add_image(rng.integers(0, 4000, (64, 80), dtype=np.uint16), name="img", scale=(2, 2))
    original = image.data
    widget._prompts.value = "cell"
    widget._run_btn.native.click()
    qtbot.waitUntil(entered.is_set, timeout=TIMEOUT)
    if change == "closed":
        viewer.layers.remove(image)
    else:
        image.data = rng.integers(0, 4000, (32, 40), dtype=np.uint16)
    release.set()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT)
    layer = viewer.layers["clipseg: cell"]
    assert layer.data.shape == original.shape and tuple(layer.scale) == (2, 2)  # placed as the data at Run
    expected = "'img' was closed during the run" if change == "closed" else "'img' changed during the run"
    assert expected in widget._status.value and "data at Run" in widget._status.value
