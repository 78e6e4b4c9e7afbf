"""Segmenting by example in the widget: Shapes and Labels supports, one-shot, mixing, reuse of a result."""

from __future__ import annotations

import numpy as np
import pytest

import napari_clipseg as ncs
from conftest import click_run, labels_layers


def core_labels(tiny_model_dir, image, prompts, threshold):
    """What the core API gives for the same inputs (the widget must agree exactly)."""
    predictor = ncs.ClipSegPredictor(ncs.load_model(tiny_model_dir, dtype="float32"))
    predictor.set_image(image)
    return ncs.labels_from_probabilities(predictor.predict(prompts), threshold)


def add_boxes(viewer, like, boxes):
    rectangles = [np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float) for y0, x0, y1, x1 in boxes]
    return viewer.add_shapes(
        rectangles, shape_type="rectangle", name="examples", scale=like.scale, translate=like.translate
    )


def test_shapes_on_the_same_image_each_shape_one_example(widget, viewer, astronaut, qtbot, tiny_model_dir):
    shapes = add_boxes(viewer, astronaut, [(100, 150, 300, 350), (350, 50, 450, 200)])
    widget._prompts.value = "flag"
    widget._example.support.value = shapes
    widget._example.class_name.value = "suit"
    widget._threshold.value = 0.5
    click_run(widget, qtbot)
    (layer,) = labels_layers(viewer)
    assert layer.name == "clipseg: flag, suit"
    assert list(layer.features["class"]) == ["background", "flag", "suit"]
    assert layer.metadata["clipseg"]["example"]["regions"] == 2
    assert widget._classes.value == "1 = flag  2 = suit" and "suit" in widget._status.value
    assert "VisualPrompt" not in widget._status.value
    masks = list(shapes.to_masks(mask_shape=(512, 512)))
    expected = core_labels(tiny_model_dir, astronaut.data, ["flag", ncs.VisualPrompt(masks, name="suit")], 0.5)
    np.testing.assert_array_equal(layer.data, expected)


def test_labels_example_on_a_reference_image(widget, viewer, astronaut, qtbot, tiny_model_dir, rng):
    reference = viewer.add_image(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), rgb=True, name="reference")
    marks = np.zeros((96, 128), np.uint8)
    marks[20:60, 30:90] = 3
    support = viewer.add_labels(marks, name="marks")
    widget._image.value = astronaut
    widget._prompts.value = ""
    widget._example.support.value = support
    widget._example.label_value.value = 3
    widget._example.example_image.value = reference
    widget._threshold.value = 0.5
    click_run(widget, qtbot)
    layer = viewer.layers["clipseg: example"]
    prompt = ncs.VisualPrompt(marks == 3, image=reference.data)
    np.testing.assert_array_equal(layer.data, core_labels(tiny_model_dir, astronaut.data, [prompt], 0.5))


def test_mixing_slider_mixes_the_name_as_text(widget, viewer, astronaut, qtbot, tiny_model_dir):
    shapes = add_boxes(viewer, astronaut, [(50, 50, 400, 300)])
    widget._image.value = astronaut
    widget._prompts.value = ""
    widget._example.support.value = shapes
    widget._example.class_name.value = "person"
    widget._example.visual_weight.value = 0.4
    widget._threshold.value = 0.5
    click_run(widget, qtbot)
    mask = shapes.to_masks(mask_shape=(512, 512))[0]
    prompt = ncs.VisualPrompt(mask, text="person", weight=0.4)
    expected = core_labels(tiny_model_dir, astronaut.data, [prompt], 0.5)
    np.testing.assert_array_equal(viewer.layers["clipseg: person"].data, expected)
    assert viewer.layers["clipseg: person"].metadata["clipseg"]["example"]["weight"] == pytest.approx(0.4)


def test_corrected_result_becomes_the_example_for_the_next_plane(widget, viewer, qtbot, tiny_model_dir, rng):
    stack = rng.integers(0, 4000, (3, 64, 80), dtype=np.uint16)
    image = viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(0, 0)
    widget._prompts.value = "cell"
    widget._threshold.value = 0.0
    click_run(widget, qtbot)
    result = viewer.layers["clipseg: cell"]
    result.brush_size = 1
    result.paint((0, 10, 70), 0)  # the user corrects plane 0 with the brush (marks the layer as edited) ...
    result.data[0, :, 40:] = 0  # ... until only the left half is a cell
    result.selected_label = 1
    viewer.layers.selection.active = result
    widget._example.use_result.native.click()
    assert widget._example.support.value is result and widget._example.pinned_index == (0,)
    viewer.dims.set_current_step(0, 2)
    widget._image.value = image
    widget._prompts.value = ""
    widget._example.class_name.value = "same as before"
    widget._threshold.value = 0.5
    click_run(widget, qtbot)
    layer = viewer.layers["clipseg: same as before"]
    prompt = ncs.VisualPrompt(result.data[0] == 1, image=stack[0])
    np.testing.assert_array_equal(layer.data[2], core_labels(tiny_model_dir, stack[2], [prompt], 0.5))
    assert not layer.data[:2].any()


def test_bad_examples_are_explained(widget, viewer, astronaut, qtbot, messages):
    widget._prompts.value = ""
    empty = viewer.add_shapes(name="nothing drawn")
    widget._image.value = astronaut
    widget._example.support.value = empty
    widget._run_btn.native.click()
    assert "has no shapes" in messages[-1][1]
    outside = add_boxes(viewer, astronaut, [(600, 600, 700, 700)])
    widget._example.support.value = outside
    widget._run_btn.native.click()
    assert "empty" in messages[-1][1]
    misaligned = viewer.add_shapes(
        [np.array([[10, 10], [10, 100], [100, 100], [100, 10]], float)],
        shape_type="rectangle",
        name="other scale",
        scale=(3, 3),
    )
    widget._example.support.value = misaligned
    widget._run_btn.native.click()
    assert "not aligned" in messages[-1][1]
    no_value = viewer.add_labels(
        np.zeros((512, 512), np.uint8), name="blank", scale=astronaut.scale, translate=astronaut.translate
    )
    widget._example.support.value = no_value
    widget._run_btn.native.click()
    assert "empty" in messages[-1][1]
    assert labels_layers(viewer) == [no_value] and not widget.is_running
