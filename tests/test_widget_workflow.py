"""The annotator's loop in the widget, driven as a user would: layout, reruns, edits, status, cancel,
regions of interest and instances."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication

import napari_clipseg as ncs
from conftest import TIMEOUT, click_run, labels_layers
from napari_clipseg._napari.widget import ClipSegWidget
from napari_clipseg.io.records import read_record


def _settle(qtbot, ms: int = 300) -> None:
    qtbot.wait(ms)
    QApplication.processEvents()


def test_the_dock_fits_napari_default_window_with_the_canvas_usable(make_napari_viewer, tiny_model_dir, qtbot):
    """napari's default window (853 x 1080 here, as napari opens a second viewer): the dock (Advanced
    collapsed) leaves the canvas >= 60 % of the width it has without the dock (napari's own layer
    panels keep theirs), and does not make the window taller."""
    viewer = make_napari_viewer(show=True)
    window, canvas = viewer.window._qt_window, viewer.window._qt_viewer.canvas.native
    window.resize(853, 1080)
    _settle(qtbot)
    width, height = canvas.width(), window.height()
    widget = ClipSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="CLIPSeg")
    _settle(qtbot)
    assert not widget._advanced.expanded and not widget._example_section.expanded
    assert canvas.width() >= 0.6 * width, (canvas.width(), width)
    assert window.height() <= height and widget.native.minimumSizeHint().height() <= height

    def top(w):  # where a control sits in the dock, top to bottom
        return w.native.mapTo(widget.native, w.native.rect().topLeft()).y()

    main_path = [widget._image, widget._prompts, widget._run_btn, widget._progress, widget._threshold]
    main_path += [widget._min_size, widget._classes, widget._export_btn, widget._advanced]
    assert [top(w) for w in main_path] == sorted(top(w) for w in main_path)


def test_open_sections_scroll_inside_the_dock_and_every_label_is_whole(make_napari_viewer, tiny_model_dir, qtbot):
    """napari docks a magicgui widget's ``native``: opening Advanced grew napari's window from 630 to
    ~1010 px (past a 900-px screen) and cut its labels ("Decode", "Precisio"). Now the dock scrolls."""
    from qtpy.QtWidgets import QLabel

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    widget = ClipSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="CLIPSeg")
    window.resize(1400, 630)
    _settle(qtbot)
    height = window.height()
    for mode in ("Segment", "Annotate"):
        widget._mode.value = mode
        for section in (widget._advanced, widget._example_section):
            if not section.expanded and section.native.isVisible():
                section.header.native.click()
        _settle(qtbot)
        assert window.height() == height, mode  # the dock scrolls; the window keeps its size
        inner, viewport = widget.native.widget(), widget.native.viewport()
        assert inner.width() <= viewport.width(), mode  # no row runs past the dock's right edge
        shown = [label for label in inner.findChildren(QLabel) if label.isVisible() and label.text()]
        cut = [
            (label.text(), label.width())
            for label in shown
            if not label.wordWrap() and label.fontMetrics().horizontalAdvance(label.text()) > label.width()
        ]
        assert not cut, (mode, cut)
    path = "/data/a long folder name/another long folder name/models/clipseg-rd64-refined"
    widget._source.value = path
    assert widget._source.tooltip.startswith(path)  # the whole path, whatever part the field shows


def test_sections_open_when_used_and_are_remembered(widget, viewer, astronaut, qtbot):
    shapes = viewer.add_shapes([np.array([[10, 10], [10, 90], [90, 90], [90, 10]], float)], name="ex")
    assert not widget._example_section.expanded
    widget._example.support.value = shapes  # choosing an example opens its section
    assert widget._example_section.expanded
    widget._advanced.header.native.click()
    assert widget._advanced.expanded and widget._device.native.isVisibleTo(widget.native)
    widget._save_settings()
    again = ClipSegWidget(viewer)
    assert again._advanced.expanded and again._example_section.expanded


def test_a_run_updates_the_newest_untouched_layer_instead_of_piling_up(widget, viewer, astronaut, qtbot):
    widget._prompts.value = "person"
    click_run(widget, qtbot)
    (first,) = labels_layers(viewer)
    first.paint((100, 100), 3)  # edited: kept
    click_run(widget, qtbot)
    second = labels_layers(viewer)[1]
    assert "edits in 'clipseg: person' were kept" in widget._status.value
    for _ in range(2):  # further runs update the untouched second layer, never a third
        click_run(widget, qtbot)
        assert labels_layers(viewer) == [first, second]


def test_a_layer_changed_by_code_is_not_overwritten(widget, viewer, astronaut, qtbot):
    widget._prompts.value = "person"
    click_run(widget, qtbot)
    (layer,) = labels_layers(viewer)
    changed = layer.data.copy()
    changed[:50, :50] = 9
    layer.data = changed  # a script, another plugin or undo: no paint event
    widget._threshold.value = 0.0
    np.testing.assert_array_equal(layer.data, changed)
    assert "has your edits" in widget._status.value
    click_run(widget, qtbot)
    assert len(labels_layers(viewer)) == 2 and layer.metadata["clipseg"]["edited"] is True
    layer2 = labels_layers(viewer)[1]
    layer2.data[0, 0] = 5  # written in place, then refreshed
    layer2.refresh()
    widget._threshold.value = 0.5
    assert layer2.data[0, 0] == 5


def test_a_layer_of_another_shape_is_named_as_such(widget, viewer, qtbot, rng):
    image = viewer.add_image(rng.integers(0, 255, (64, 64), dtype=np.uint8), name="img")
    widget._prompts.value = "cell"
    click_run(widget, qtbot)
    image.data = rng.integers(0, 255, (48, 80), dtype=np.uint8)
    click_run(widget, qtbot)
    assert "has another shape than 'img'" in widget._status.value and "edits" not in widget._status.value


def test_status_shows_the_layer_as_it_is_and_long_messages_in_full(widget, viewer, astronaut, qtbot):
    widget._prompts.value = "person"
    widget._threshold.value = 0.0
    click_run(widget, qtbot)
    assert "person 262144 px" in widget._status.value
    widget._threshold.value = 1.0
    assert "person 0 px" in widget._status.value  # after the threshold moved, not the old count
    widget._source.value = "CIDAS/clipseg-rd64-refined"  # offline: a long message
    click_run(widget, qtbot)
    label = widget._status.native
    assert "HF_HUB_OFFLINE=1" in widget._status.value and widget._status.value.endswith(".")
    assert label.wordWrap() and label.toolTip() == widget._status.value


def test_restored_prompts_are_replaced_by_typing(viewer, tiny_model_dir, qtbot):
    from napari_clipseg._napari.settings import Settings, save_settings

    save_settings(Settings(prompts="rocket"))
    widget = ClipSegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.window._qt_window.show()
    widget._prompts.native.setFocus()
    _settle(qtbot, 100)
    qtbot.keyClicks(widget._prompts.native, "person")
    assert widget._prompts.value == "person"


def test_small_things(widget, viewer, astronaut, qtbot, messages, capfd):
    widget._prompts.value = "person, rocket, person"
    widget._run_btn.native.click()
    assert "'person' is given more than once" in messages[-1][1] and not widget.is_running
    widget._prompts.value = "person, rocket"
    widget._show_probs.value = True
    click_run(widget, qtbot)
    assert [x.name for x in viewer.layers if x.name.startswith("clipseg p:")] == [
        "clipseg p: person",
        "clipseg p: rocket",
    ]
    widget._show_probs.value = False  # unticking removes the maps
    assert not [x for x in viewer.layers if x.name.startswith("clipseg p:")]
    layer = viewer.layers["clipseg: person, rocket"]
    layer.selected_label = 2
    viewer.layers.selection.active = layer
    widget._example.class_name.value = "old name"
    widget._example.use_result.native.click()
    assert widget._example.class_name.value == "rocket"  # the example takes its class's name
    assert "it/s" not in capfd.readouterr().err  # no tqdm progress lines in the terminal


@pytest.fixture
def held_blocks():
    """The first vision block of the widget's model waits until released; we count the blocks that ran."""
    ran, entered, release = [], threading.Event(), threading.Event()

    def hook(*_):
        ran.append(1)
        entered.set()
        release.wait(TIMEOUT / 1000)

    def install(widget):
        model = widget._runner.predictor.model
        return [block.register_forward_hook(hook) for block in model.towers.visual.transformer.resblocks]

    return ran, entered, release, install


def test_cancel_stops_inside_the_image_tower(widget, viewer, qtbot, rng, held_blocks):
    ran, entered, release, install = held_blocks
    viewer.add_image(rng.random((64, 64)).astype(np.float32), name="warm")
    widget._prompts.value = "x"
    click_run(widget, qtbot)  # loads the model
    hooks = install(widget)
    try:
        viewer.add_image(rng.random((64, 64)).astype(np.float32), name="new")
        widget._prompts.value = "y"
        widget._run_btn.native.click()
        qtbot.waitUntil(entered.is_set, timeout=TIMEOUT)  # inside the first block
        widget._cancel_btn.native.click()
        release.set()
        qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT)
    finally:
        release.set()
        for hook in hooks:
            hook.remove()
    deepest = widget._runner.predictor.model.config.deepest_layer + 1
    assert len(ran) < deepest  # stopped between blocks, not after the whole tower (latency: see the benchmark)
    assert "Cancelled" in widget._status.value and widget._progress.value == 0
    assert [x.name for x in labels_layers(viewer)] == ["clipseg: x"]


def test_inside_boxes_segments_only_the_boxes(widget, viewer, qtbot, rng, tiny_model_dir):
    from napari_clipseg.segmentation.regions import iter_segment_boxes

    data = rng.integers(0, 4000, (300, 500), dtype=np.uint16)
    image = viewer.add_image(data, name="slide", scale=(2, 2))
    rect = np.array([[20, 30], [20, 130], [120, 130], [120, 30]], float)
    shapes = viewer.add_shapes([rect, rect + np.array([150, 300])], shape_type="rectangle", name="rois", scale=(2, 2))
    widget._image.value = image
    widget._options.region.value = "inside boxes"
    widget._options.boxes.value = shapes
    widget._prompts.value = "cell"
    widget._threshold.value = 0.0
    click_run(widget, qtbot)
    layer = viewer.layers["clipseg: cell"]
    assert layer.data.shape == (300, 500) and tuple(layer.scale) == (2, 2)
    inside = np.zeros((300, 500), bool)
    inside[20:120, 30:130] = inside[170:270, 330:430] = True
    assert np.all(layer.data[inside] == 1) and not layer.data[~inside].any()
    assert layer.metadata["clipseg"]["boxes"] == [[20, 120, 30, 130], [170, 270, 330, 430]]
    parts = ncs.run(
        iter_segment_boxes(
            data, [(20, 120, 30, 130)], ["cell"], ncs.ClipSegPredictor(ncs.load_model(tiny_model_dir, dtype="float32"))
        )
    )
    widget._threshold.value = 0.5
    np.testing.assert_array_equal(
        layer.data[20:120, 30:130], ncs.labels_from_probabilities(parts[0].result.probabilities, 0.5)
    )


def test_inside_a_box_of_a_huge_lazy_image_keeps_the_labels_sparse(widget, viewer, qtbot):
    import dask.array as da

    lazy = da.random.default_rng(0).integers(0, 4000, (30_000, 30_000), chunks=2048).astype(np.uint16)
    image = viewer.add_image(lazy, name="huge", contrast_limits=(0, 4000), visible=False)  # never drawn: memory
    shapes = viewer.add_shapes([np.array([[1000, 1000], [1000, 1400], [1300, 1400], [1300, 1000]], float)], name="roi")
    widget._image.value = image
    widget._options.region.value = "inside boxes"
    widget._options.boxes.value = shapes
    widget._options.contrast.value = True  # one range without sampling the whole image
    widget._prompts.value = "cell"
    widget._threshold.value = 0.0
    click_run(widget, qtbot)
    layer = viewer.layers["clipseg: cell"]
    assert layer.data.shape == (30_000, 30_000) and not isinstance(layer.data, np.ndarray)
    assert layer.data.nchunks_initialized <= 4 and int(layer.data[1100, 1100]) == 1
    layer.paint((5000, 5000), 2)  # the annotator can still paint anywhere
    assert int(layer.data[5000, 5000]) == 2


def _discs_image():
    yy, xx = np.mgrid[:128, :160]
    image = np.zeros((128, 160), np.float32)
    for cy, cx in ((40, 40), (40, 62), (90, 110)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= 12**2] = 1.0
    return image


def test_instances_layer_live_and_exported(widget, viewer, qtbot, tmp_path, dialogs):
    viewer.add_image(_discs_image(), name="discs")
    widget._prompts.value = "cell"
    widget._threshold.value = 0.0
    widget._output.value = "classes + instances"
    widget._split.value = 5
    click_run(widget, qtbot)
    instances = viewer.layers["clipseg instances: cell"]
    assert instances.data.max() >= 1 and list(instances.features["class"][:2]) == ["background", "cell"]
    widget._threshold.value = 1.0  # live: from the cached probabilities
    assert instances.data.max() == 0
    widget._threshold.value = 0.0
    n = int(instances.data.max())
    viewer.layers.selection.active = viewer.layers["clipseg: cell"]
    dialogs.folders.append(str(tmp_path))
    widget._export_btn.native.click()
    record = read_record(tmp_path / "clipseg.json")
    assert record["files"]["instances"] == "instances.tif" and record["instance_classes"] == [1] * n
    from napari_clipseg.io.export import read_array

    np.testing.assert_array_equal(read_array(tmp_path / "instances.tif"), instances.data)
