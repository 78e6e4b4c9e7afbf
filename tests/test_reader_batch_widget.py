"""Batch outputs back in napari: the reader, correcting and saving (record marked edited), and the
dock's "Pre-label a folder" run in the worker with progress and cancel."""

from __future__ import annotations

import threading

import numpy as np

import napari_clipseg as ncs
from conftest import DATASET_PROMPTS as PROMPTS
from conftest import TIMEOUT
from napari_clipseg._napari.reader import get_reader
from napari_clipseg.io.outputs import read_output
from napari_clipseg.io.records import read_record


def test_reader_opens_outputs_with_classes_scale_and_record(dataset, tiny_model, tmp_path):
    out = tmp_path / "out"
    ncs.segment_dataset(dataset["sub/stack"], PROMPTS, out, model=tiny_model, instances=True)
    labels, instances = get_reader(str(out / "stack"))(str(out / "stack"))
    data, kwargs, kind = labels
    assert kind == "labels" and kwargs["name"] == "stack labels" and kwargs["scale"] == [2.0, 0.25, 0.5]
    np.testing.assert_array_equal(data, read_output(out / "stack"))
    assert list(kwargs["features"]["class"]) == ["background", *PROMPTS]
    assert kwargs["metadata"]["clipseg"]["batch"]["input"] == str(dataset["sub/stack"])
    assert instances[1]["metadata"]["clipseg_kind"] == "instances"
    (single,) = get_reader(str(out / "stack" / "labels.tif"))("x")  # a file of the folder
    assert single[1]["name"] == "stack labels"
    assert get_reader(str(dataset["photo"])) is None  # not ours: napari's own readers open it
    assert get_reader(str(tmp_path)) is None


def test_correct_in_napari_and_save_marks_the_record_edited(viewer, dataset, tiny_model, tmp_path):
    out = tmp_path / "out"
    ncs.segment_dataset(dataset["photo"], PROMPTS, out, model=tiny_model)
    written = (out / "photo" / "labels.tif").read_bytes()
    (layer,) = viewer.open(str(out / "photo"), plugin="napari-clipseg")
    assert layer.features["class"].tolist() == ["background", *PROMPTS]
    untouched = tmp_path / "untouched.tif"
    viewer.layers.save(str(untouched), selected=False, plugin="napari-clipseg")
    assert read_record(f"{untouched}.json")["edited"] is False
    layer.data[:10, :10] = 0  # the annotator's correction (any change to the data counts)
    corrected = tmp_path / "corrected.tif"
    layer.save(str(corrected), plugin="napari-clipseg")
    record = read_record(f"{corrected}.json")
    assert record["edited"] is True and record["batch"]["input"] == str(dataset["photo"])
    assert record["files"] == {"labels": "corrected.tif"}
    assert (out / "photo" / "labels.tif").read_bytes() == written  # painting never writes into the output
    assert read_record(out / "photo" / "clipseg.json")["edited"] is False


def test_prelabel_a_folder_from_the_dock(widget, dataset, dialogs, messages, qtbot, tmp_path):
    out = tmp_path / "pre-labels"
    widget._prompts.value = ", ".join(PROMPTS)
    dialogs.folders += [str(dataset["photo"].parent), str(out)]
    widget._folder_btn.native.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT)
    assert dialogs.questions[1].endswith(f"[{tmp_path / 'images-clipseg'}]")  # a default beside the folder
    assert messages[-1][0] == "info" and "3 done" in messages[-1][1]
    for name in dataset:
        assert [c["name"] for c in read_record(out / name / "clipseg.json")["classes"]] == PROMPTS
    widget._prompts.value = ""
    widget._folder_btn.native.click()
    assert "Type the prompts first" in messages[-1][1] and not widget.is_running


def test_cancel_a_folder_run_keeps_finished_images(widget, tmp_path, dialogs, messages, qtbot, rng):
    import imageio.v3 as iio

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(30):
        iio.imwrite(folder / f"img{i:02d}.png", rng.integers(0, 255, (300, 300, 3), dtype=np.uint8))
    widget._prompts.value = "cell"
    dialogs.folders += [str(folder), str(tmp_path / "out")]
    widget._folder_btn.native.click()
    qtbot.waitUntil(lambda: len(list((tmp_path / "out").glob("*/clipseg.json"))) >= 1, timeout=TIMEOUT)
    # Hold the image tower until the Cancel is pressed, so that no machine finishes the folder first.
    release = threading.Event()
    blocks = widget._runner.predictor.model.towers.visual.transformer.resblocks
    hooks = [block.register_forward_hook(lambda *_: release.wait(TIMEOUT / 1000)) for block in blocks]
    try:
        widget.cancel()
    finally:
        release.set()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT)
    for hook in hooks:
        hook.remove()
    assert "images finished before keep their pre-labels" in messages[-1][1]
    done = list((tmp_path / "out").glob("*/clipseg.json"))
    assert 1 <= len(done) < 30 and not list((tmp_path / "out").glob("*/labels.tif.*"))
