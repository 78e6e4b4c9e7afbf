"""Learn from corrections in the dock, driven as a user would: run, correct, Learn, save, run again."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TIMEOUT, click_run, labels_layers
from napari_clipseg.evaluation.metrics import class_scores
from napari_clipseg.modeling.decoder_files import read_decoder
from test_finetune import striped_discs


def _run_and_correct(widget, viewer, qtbot, images: int) -> None:
    """Run on ``images`` synthetic images and correct each result to the true discs, as an annotator would."""
    widget._prompts.value = "disc"
    for seed in range(images):
        image, truth = striped_discs(seed)
        viewer.add_image(image, name=f"discs {seed}")
        widget._image.value = viewer.layers[f"discs {seed}"]
        click_run(widget, qtbot)
        labels_layers(viewer)[-1].data = truth


def test_learn_from_corrections_then_the_next_run_uses_the_decoder(widget, viewer, qtbot, dialogs, messages, tmp_path):
    _run_and_correct(widget, viewer, qtbot, 6)
    before = [lab.data.copy() for lab in labels_layers(viewer)]
    dialogs.folders.append(str(tmp_path / "my-decoder"))
    widget._learn_btn.native.click()
    assert "from 6 corrected images" in messages[-1][1]
    qtbot.waitUntil(lambda: not widget.is_running, timeout=2 * TIMEOUT)
    assert "Decoder saved to" in messages[-1][1] and messages[-1][0] == "info", messages[-1]
    assert widget._decoder.value == str(tmp_path / "my-decoder")
    assert read_decoder(tmp_path / "my-decoder")[1]["classes"] == ["disc"]
    assert all(np.array_equal(a, lab.data) for a, lab in zip(before, labels_layers(viewer), strict=True))
    image, truth = striped_discs(300)
    viewer.add_image(image, name="new")
    widget._image.value = viewer.layers["new"]
    click_run(widget, qtbot)
    result = labels_layers(viewer)[-1]
    assert result.metadata["clipseg"]["model"]["decoder"]["name"] == "my-decoder"
    assert "Decoder: my-decoder." in messages[-1][1]
    assert class_scores(np.asarray(result.data), truth, 1)["iou"] > 0.5


def test_learn_needs_corrections_and_can_be_cancelled(widget, viewer, qtbot, dialogs, messages):
    widget._learn_btn.native.click()
    assert "Correct a result layer first" in messages[-1][1] and not widget.is_running
    _run_and_correct(widget, viewer, qtbot, 4)
    widget._learn_btn.native.click()
    qtbot.waitUntil(lambda: "epoch" in widget._status.value, timeout=TIMEOUT)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT)
    assert "no decoder was made" in messages[-1][1] and widget._decoder.value == ""


def test_only_the_corrected_planes_of_a_stack_are_learnt(widget, viewer, qtbot):
    """A whole-stack run with two of four planes corrected gives two training pairs, not four."""
    from napari_clipseg._napari.learn_action import collect_pairs

    planes = [striped_discs(seed) for seed in range(4)]
    viewer.add_image(np.stack([image for image, _ in planes]), name="stack")
    widget._image.value = viewer.layers["stack"]
    widget._options.region.value = "whole stack"
    widget._prompts.value = "disc"
    click_run(widget, qtbot)
    layer = labels_layers(viewer)[-1]
    for z in (1, 3):
        layer.data[z] = planes[z][1]
    pairs, classes = collect_pairs(viewer)
    assert classes == ["disc"] and [p.name for p in pairs] == [f"{layer.name} plane [1]", f"{layer.name} plane [3]"]
    np.testing.assert_array_equal(pairs[1].labels, planes[3][1])
    np.testing.assert_array_equal(pairs[1].image, planes[3][0])


def test_a_refused_training_is_said_as_an_outcome_and_nothing_is_asked():
    from napari_clipseg._napari.learn_action import offer_decoder
    from napari_clipseg.learning.train import FineTuneResult, FineTuneSettings

    refused = FineTuneResult(
        state={}, classes=["disc"], base={}, settings=FineTuneSettings(), base_iou=0.30, iou=0.25, best_epoch=0,
        accepted=False, training=["a", "b"], held_out=["c"],
    )  # fmt: skip

    class NoDialogs:
        def choose_folder(self, *_):
            pytest.fail("a refused decoder is never offered for saving")

    text, level = offer_decoder(NoDialogs(), None, refused, lambda folder: pytest.fail("never used"))
    assert level == "warning" and "stays as it was" in text and "0.25, now 0.30" in text and "Nothing was saved" in text
