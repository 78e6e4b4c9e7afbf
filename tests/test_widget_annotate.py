"""The dock's "Annotate a folder" mode, driven as an annotator would: open, next, paint, next, learn, next."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import napari_clipseg as ncs
from conftest import TIMEOUT, disc_images
from napari_clipseg._napari.annotate_view import IMAGE_LAYER, LABELS_LAYER

N_IMAGES = 8


def _layer_names(viewer):
    return [layer.name for layer in viewer.layers]


def _click(qtbot, panel, button):
    """Click a loop button and wait for its disk step (verify, read the next image) to be shown."""
    _step(qtbot, panel, button.native.click)


def _step(qtbot, panel, act):
    """Do ``act`` (a click, a key) and wait for its disk step to be shown."""
    before = (panel.current, len(panel._history))
    act()
    qtbot.waitUntil(lambda: not panel._disk.busy and (panel.current, len(panel._history)) != before, timeout=TIMEOUT)


def _open(widget, qtbot, tmp_path, auto_learn):
    truth = disc_images(tmp_path / "images", N_IMAGES)
    widget._mode.value = "Annotate"
    panel = widget._annotate
    panel.auto_learn.value = auto_learn
    widget._prompts.value = "disc"
    panel.images.value = str(tmp_path / "images")
    panel.open_btn.native.click()
    qtbot.waitUntil(lambda: panel.current is not None, timeout=TIMEOUT)  # pre-labelled, then the first shown
    assert not panel._disk.busy  # free from the moment the image is shown: the first Next is never dropped
    return panel, truth


def test_open_next_paint_next_learn_next(widget, viewer, qtbot, tmp_path, messages):
    truth = disc_images(tmp_path / "images", N_IMAGES)
    widget._mode.value = "Annotate"
    assert not widget._annotate.native.isHidden() and widget._segment_page.native.isHidden()
    assert widget._image_row.native.isHidden()
    panel = widget._annotate
    widget._prompts.value = "disc"
    panel.images.value = str(tmp_path / "images")
    assert panel.folder.value == str(tmp_path / "images-clipseg-project")  # suggested beside the images
    panel.auto_learn.value = False  # Learn on request here; "Learn as I go" has its own test
    panel.open_btn.native.click()
    qtbot.waitUntil(lambda: panel.current is not None, timeout=TIMEOUT)  # pre-labelled, then the first shown
    assert _layer_names(viewer) == [IMAGE_LAYER, LABELS_LAYER]
    project = panel.project
    assert panel.current == project.queue()[0][0] and "Verified 0 of 8" in panel.counts.value
    first = panel.current
    untouched = viewer.layers[LABELS_LAYER].data.copy()

    _click(qtbot, panel, panel.next_btn)  # an untouched pre-label is accepted as it is
    assert project.state(first) == "verified"
    np.testing.assert_array_equal(project.verified_labels(first), untouched)
    second = panel.current
    assert second != first and _layer_names(viewer) == [IMAGE_LAYER, LABELS_LAYER]  # replaced, not piled up
    viewer.layers[LABELS_LAYER].data = truth[second]  # the annotator paints the truth
    _click(qtbot, panel, panel.next_btn)
    np.testing.assert_array_equal(project.verified_labels(second), truth[second])
    assert "Verified 2 of 8" in panel.counts.value

    for _ in range(3):  # correct a few more, then learn
        viewer.layers[LABELS_LAYER].data = truth[panel.current]
        _click(qtbot, panel, panel.next_btn)
    viewer.layers[LABELS_LAYER].data = truth[panel.current]
    on_screen = panel.current
    panel.learn_btn.native.click()
    assert panel.cancel_btn.enabled
    qtbot.waitUntil(lambda: not panel.is_running, timeout=4 * TIMEOUT)  # learnt, then re-predicted the others
    assert any("held-out IoU" in text for _, text in messages), messages
    assert not any(level == "error" for level, _ in messages), messages
    assert project.state(on_screen) == "verified"  # Learn verified it first
    waiting = [n for n in project.names if project.state(n) == "pre-labelled"]
    for name in waiting if project.decoder is not None else []:
        record = ncs.read_record(project.folder.prelabels / name / "clipseg.json")
        assert record["model"]["decoder"]["name"] == project.decoder.name

    if project.decoder is None:  # the Learn was refused: said, and the pre-labels stay
        assert any("stays as it was" in text for _, text in messages), messages
    _click(qtbot, panel, panel.next_btn)
    assert panel.current in waiting and _layer_names(viewer) == [IMAGE_LAYER, LABELS_LAYER]
    _click(qtbot, panel, panel.previous_btn)
    assert panel.current == on_screen
    np.testing.assert_array_equal(viewer.layers[LABELS_LAYER].data, truth[on_screen])


def test_a_second_dock_on_the_same_project_is_refused(widget, viewer, qtbot, tmp_path, messages, tiny_model_dir):
    disc_images(tmp_path / "images", N_IMAGES)
    other = ncs.open_project(
        tmp_path / "images", tmp_path / "p", prompts=["disc"], model=ncs.ModelSpec(str(tiny_model_dir))
    )
    widget._mode.value = "Annotate"
    widget._prompts.value = "disc"
    widget._annotate.images.value = str(tmp_path / "images")
    widget._annotate.folder.value = str(tmp_path / "p")
    widget._annotate.open_btn.native.click()
    assert messages[-1][0] == "error" and "open in another" in messages[-1][1]
    assert widget._annotate.project is None and not widget._annotate.next_btn.enabled
    other.close()


def test_learn_as_i_go_learns_in_the_background_and_leaves_the_image_on_screen(
    widget, viewer, qtbot, tmp_path, messages
):
    panel, truth = _open(widget, qtbot, tmp_path, auto_learn=True)
    project = panel.project
    assert project.auto_learn == 1
    for _ in range(3):  # the second verified image makes a Learn due
        viewer.layers[LABELS_LAYER].data = truth[panel.current]
        _click(qtbot, panel, panel.next_btn)
    on_screen = panel.current
    painted = viewer.layers[LABELS_LAYER].data.copy()
    painted[:6, :6] = 1 - painted[:6, :6]  # a brush stroke, before the Learn ends (its outcome is shown after)
    viewer.layers[LABELS_LAYER].data = painted
    qtbot.waitUntil(lambda: project.last_learn is not None and not panel.is_running, timeout=4 * TIMEOUT)
    assert any("Learnt from" in text or "stays as it was" in text for _, text in messages), messages
    assert not any(level == "error" for level, _ in messages), messages
    np.testing.assert_array_equal(viewer.layers[LABELS_LAYER].data, painted)  # touched labels: never replaced
    assert project.status()["verified"] == 3 and panel.current == on_screen
    for name in [n for n in project.names if project.state(n) == "verified"]:
        np.testing.assert_array_equal(project.verified_labels(name), truth[name])
    _click(qtbot, panel, panel.next_btn)
    np.testing.assert_array_equal(project.verified_labels(on_screen), painted)


def test_after_a_kept_learn_untouched_labels_on_screen_show_the_new_pre_label(
    widget, viewer, qtbot, tmp_path, monkeypatch
):
    panel, truth = _open(widget, qtbot, tmp_path, auto_learn=True)
    project = panel.project
    for _ in range(3):
        viewer.layers[LABELS_LAYER].data = truth[panel.current]
        _click(qtbot, panel, panel.next_btn)
    on_screen = panel.current
    qtbot.waitUntil(lambda: project.last_learn is not None and not panel.is_running, timeout=4 * TIMEOUT)
    assert project.last_learn.accepted  # a refiner on top of the decoder, at least: better than random weights
    assert widget._decoder.value == str(project.decoder)  # the Segment mode runs the project's decoder too
    assert widget._threshold.value == pytest.approx(project.threshold)
    monkeypatch.setattr(ncs.ModelSpec, "load", lambda *a, **k: pytest.fail("the base was read again"))
    segment_model = widget._runner.model(widget._model.spec(), project.stop)  # the held base, the new decoder
    assert segment_model.info.decoder["name"] == project.decoder.name and segment_model.pixel_refiner is not None
    record = ncs.read_record(project.folder.prelabels / on_screen / "clipseg.json")
    assert record["model"]["decoder"]["name"] == project.decoder.name  # the image on screen is not a Learn behind
    new = np.load(project.folder.prelabels / on_screen / "labels.npy")
    np.testing.assert_array_equal(viewer.layers[LABELS_LAYER].data, new)  # shown in place
    assert panel.current == on_screen and _layer_names(viewer) == [IMAGE_LAYER, LABELS_LAYER]
    _click(qtbot, panel, panel.next_btn)  # accepted as it is: nothing changed against what was shown
    verified = ncs.read_record(project.folder.verified / on_screen / "clipseg.json")["project"]
    assert verified["changed"] == 0 and verified["decoder"] == record["model"]["decoder"]["name"]
    qtbot.waitUntil(lambda: not panel.is_running, timeout=4 * TIMEOUT)
    choice = panel.decoders.decoder  # the project's decoders, the one in use chosen
    assert choice.value == project.decoder.name and "" in choice.choices and choice.enabled
    choice.value = ""  # back to the base model: in use, the waiting images re-predicted with it
    assert project.decoder is None and widget._decoder.value == ""
    qtbot.waitUntil(lambda: not panel.is_running, timeout=4 * TIMEOUT)
    waiting = [n for n in project.names if project.state(n) == "pre-labelled" and n != panel.current]
    assert waiting and all(project.entry(n).decoder is None for n in waiting)


def test_export_from_the_dock_never_destroys_and_says_every_outcome(widget, qtbot, tmp_path, messages, dialogs):
    panel, _ = _open(widget, qtbot, tmp_path, auto_learn=False)
    for _ in range(2):
        _click(qtbot, panel, panel.next_btn)

    def export(folder: Path, answer: bool | None = None) -> str:
        dialogs.folders.append(str(folder))  # what a real folder dialog returns: a folder that exists
        if answer is not None:
            dialogs.answers.append(answer)
        panel.export_btn.native.click()
        qtbot.waitUntil(lambda: not panel._disk.busy, timeout=TIMEOUT)
        assert panel.status.value == messages[-1][1]  # said whole in the Annotate mode's own status box
        return messages[-1][1]

    (tmp_path / "empty").mkdir()
    assert export(tmp_path / "empty").startswith(f"Exported 2 verified images to {tmp_path / 'empty'}")
    assert sorted(p.name for p in (tmp_path / "empty").iterdir() if p.is_dir()) == sorted(
        n for n in panel.project.names if panel.project.state(n) == "verified"
    )
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the annotator's")
    made = mine / "images-training-set"  # a new set inside a folder that holds other files
    assert export(mine).startswith(f"Exported 2 verified images to {made}")
    assert export(mine, answer=False) == "Export cancelled: nothing was changed."
    assert "holds an earlier export of this project" in dialogs.questions[-1]
    assert export(mine, answer=True).startswith(f"Exported 2 verified images to {made}")  # replaced, as asked
    assert (mine / "notes.txt").read_text() == "the annotator's"
    assert sorted(p.name for p in mine.iterdir()) == ["images-training-set", "notes.txt"]
    assert not any(level == "error" for level, _ in messages), messages
    assert panel.status.native.height() == panel.status.native.minimumHeight()  # a fixed height


def test_a_project_made_in_the_dock_takes_its_options_and_shares_its_model(
    widget, qtbot, tmp_path, tiny_model_dir, monkeypatch, messages
):
    import os

    loads = []
    load = ncs.ModelSpec.load
    monkeypatch.setattr(ncs.ModelSpec, "load", lambda spec, **kw: loads.append(spec) or load(spec, **kw))
    os.symlink(tiny_model_dir, tmp_path / "linked-model")  # the dock's model by another path than the project's
    widget._source.value = str(tmp_path / "linked-model")
    widget._options.tiling.value = "tiled"
    widget._options.overlap.value = 24
    widget._options.channels.value = "0, 0, 0"
    panel, _ = _open(widget, qtbot, tmp_path, auto_learn=False)
    assert not any(level == "error" for level, _ in messages), messages
    options = panel.project.options
    assert (options.mode, options.overlap, list(options.channels)) == ("tiled", 24, [0, 0, 0])
    assert len(loads) == 1
    runner = widget._runner  # the Segment mode asks for the model by the dock's path: the one held
    runner.model(widget._model.spec(), panel.project.stop)
    runner.model(widget._model.spec().replace(source=str(tiny_model_dir), device="cpu"), panel.project.stop)
    assert len(loads) == 1


def _press(viewer, key: str) -> None:
    """Press one of the loop's keys as napari dispatches it (the viewer's keymap)."""
    from napari.utils.key_bindings import coerce_keybinding

    viewer.keymap[coerce_keybinding(key)](viewer)


def test_a_days_work_through_the_dock_and_its_keys(widget, viewer, qtbot, tmp_path, messages, dialogs):
    """Open, verify 8 images with Learn as I go by the keys, export to a new folder, close, reopen."""
    from napari_clipseg._napari.dock_text import KEYS

    panel, truth = _open(widget, qtbot, tmp_path, auto_learn=True)
    project = panel.project
    from napari.utils.key_bindings import coerce_keybinding

    assert all(coerce_keybinding(key) in viewer.keymap for key in KEYS.values())
    _press(viewer, KEYS["labels"])  # a look at the image under the labels, and back
    assert not viewer.layers[LABELS_LAYER].visible
    _press(viewer, KEYS["labels"])
    skipped = panel.current
    _step(qtbot, panel, lambda: _press(viewer, KEYS["skip"]))
    assert project.state(skipped) == "skipped"
    while panel.current is not None:
        viewer.layers[LABELS_LAYER].data = truth[panel.current]
        _step(qtbot, panel, lambda: _press(viewer, KEYS["next"]))
    qtbot.waitUntil(lambda: not panel.is_running, timeout=4 * TIMEOUT)
    assert project.status()["verified"] == N_IMAGES - 1 and project.last_learn is not None
    assert "Every image is verified or skipped." in panel.image_name.value
    (tmp_path / "sets").mkdir()
    dialogs.folders.append(str(tmp_path / "sets"))
    panel.export_btn.native.click()
    qtbot.waitUntil(lambda: not panel._disk.busy, timeout=TIMEOUT)
    assert panel.status.value.startswith(f"Exported {N_IMAGES - 1} verified images to {tmp_path / 'sets'}")
    assert len([p for p in (tmp_path / "sets").iterdir() if p.is_dir()]) == N_IMAGES - 1
    panel.close()
    panel.open_btn.native.click()  # the next morning: the loop continues where it stopped
    assert panel.project is not None, messages[-1]
    qtbot.waitUntil(lambda: not panel.is_running, timeout=TIMEOUT)
    assert f"Verified {N_IMAGES - 1} of {N_IMAGES}" in panel.counts.value
    assert not any(level == "error" for level, _ in messages), messages


def test_the_annotate_threshold_sets_the_projects_and_relabels_untouched_labels(widget, viewer, qtbot, tmp_path):
    from napari_clipseg.segmentation.postprocess import labels_from_probabilities

    panel, _ = _open(widget, qtbot, tmp_path, auto_learn=False)
    project, slider = panel.project, panel.decoders.slider
    assert slider.enabled and slider.value == pytest.approx(project.threshold)
    probabilities = project.probabilities(panel.current)
    slider.value = 0.2  # released there
    assert project.threshold == pytest.approx(0.2) and slider.label == "Threshold 0.20"
    shown = labels_from_probabilities(probabilities, 0.2)
    np.testing.assert_array_equal(viewer.layers[LABELS_LAYER].data, shown)  # untouched: they follow
    painted = shown.copy()
    painted[:5, :5] = 1 - painted[:5, :5]
    viewer.layers[LABELS_LAYER].data = painted
    slider.value = 0.6
    assert project.threshold == pytest.approx(0.6)
    np.testing.assert_array_equal(viewer.layers[LABELS_LAYER].data, painted)  # touched: never replaced
