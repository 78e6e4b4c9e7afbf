"""The CLIPSeg dock widget: prompts in, editable Labels layers out, without blocking napari.

Thin by design: it gathers inputs into a :class:`~.result_layers.RunRequest` (with a
:class:`~napari_clipseg.options.SegmentOptions`), runs the core pipeline generator
(``napari_clipseg.pipeline.iter_segment``) in a napari ``thread_worker``, shows its progress, and
creates or updates layers on the main thread when the result arrives. Set
``NAPARI_CLIPSEG_SYNC=1`` to run inline (debugging).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from .._gl_guard import guard_triton

guard_triton()  # before torch is imported below: napari has usually drawn by now (see _gl_guard)

from magicgui.widgets import (  # noqa: E402
    CheckBox,
    ComboBox,
    Container,
    FloatSlider,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    TextEdit,
)
from napari.layers import Image, Labels  # noqa: E402
from napari.utils.notifications import show_error, show_info, show_warning  # noqa: E402
from qtpy.QtCore import QEvent, QObject, Qt, QTimer  # noqa: E402

from ..options import split_prompts  # noqa: E402
from ..prompts import prompt_label  # noqa: E402
from ..results import Progress, SegmentationResult, run  # noqa: E402
from . import layers as _layers  # noqa: E402
from .example_panel import ExamplePanel  # noqa: E402
from .export_action import export_labels_layer  # noqa: E402
from .jobs import ModelKey, ModelRunner, describe_error, settle_heavy_imports  # noqa: E402
from .options_panel import OptionsPanel  # noqa: E402
from .result_layers import ResultLayers, RunRequest  # noqa: E402
from .settings import REGIONS, Settings, load_settings, save_settings  # noqa: E402

if TYPE_CHECKING:
    import napari

logger = logging.getLogger(__name__)
SYNC = os.environ.get("NAPARI_CLIPSEG_SYNC", "").lower() in ("1", "true", "yes")


def _ask_folder(parent: Any, start: str) -> str:
    from qtpy.QtWidgets import QFileDialog

    return QFileDialog.getExistingDirectory(parent, "Export masks to folder", start)


def _confirm(parent: Any, question: str) -> bool:
    from qtpy.QtWidgets import QMessageBox

    return QMessageBox.question(parent, "napari-clipseg", question) == QMessageBox.StandardButton.Yes


@dataclass
class Dialogs:
    """The modal questions the widget asks; tests and scripts pass their own answers.

    Attributes:
        ask_folder: ``(parent, start folder) -> chosen folder`` ("" when cancelled).
        confirm: ``(parent, question) -> yes?``.
    """

    ask_folder: Callable[[Any, str], str] = _ask_folder
    confirm: Callable[[Any, str], bool] = _confirm


class _EnterRuns(QObject):
    """Enter in the prompt box runs; Shift+Enter inserts a new line."""

    def __init__(self, callback: Any) -> None:
        super().__init__()
        self._callback = callback

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        is_enter = event.type() == QEvent.Type.KeyPress and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if is_enter and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self._callback()
            return True
        return False


class ClipSegWidget(Container):
    """Segment the selected image from text prompts (see the module docstring)."""

    def __init__(self, viewer: napari.viewer.Viewer, dialogs: Dialogs | None = None) -> None:
        super().__init__(labels=True)
        settle_heavy_imports()
        from ..modeling.devices import available_devices

        self._viewer = viewer
        self.dialogs = dialogs or Dialogs()
        self._worker = None
        self._runner = ModelRunner()
        self._results = ResultLayers(viewer)
        self._create_controls(load_settings(), available_devices())
        self._lay_out()
        self._polish()
        self._connect()
        self._on_active()

    def _create_controls(self, s: Settings, available: list[str]) -> None:
        self._image = ComboBox(label="Image", choices=self._image_choices, nullable=True)
        self._prompts = TextEdit(
            label="Prompts",
            value=s.prompts,
            tooltip="One class per line or comma-separated. Enter runs, Shift+Enter adds a line.",
        )
        self._source = LineEdit(
            label="Model", value=s.model_source, tooltip="Hub id, a transformers folder, or an original .pth checkpoint"
        )
        self._browse_file, self._browse_dir = PushButton(text="File…"), PushButton(text="Folder…")
        devices = ["auto", *available]
        self._device = ComboBox(label="Device", choices=devices, value=s.device if s.device in devices else "auto")
        self._precision = ComboBox(label="Precision", choices=["float32", "bfloat16", "float16"], value=s.precision)
        self._threshold = FloatSlider(label="Threshold", min=0.0, max=1.0, step=0.01, value=s.options.threshold)
        self._min_size = SpinBox(label="Min. size (px)", min=0, max=10_000_000, value=s.options.min_size)
        self._show_probs = CheckBox(text="Show probability maps", value=s.show_probabilities)
        self._run_btn, self._cancel_btn = PushButton(text="Run"), PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="Progress", min=0, max=1, value=0)
        self._status = Label(label="Status", value="Ready.")
        self._classes = Label(label="Classes", value="")
        self._export_format = ComboBox(choices=[".tif", ".png"], value=".tif")
        self._export_btn = PushButton(text="Export masks…")
        self._example = ExamplePanel(self._viewer)
        self._options = OptionsPanel()
        self._options.restore(s)

    def _lay_out(self) -> None:
        row = partial(Container, layout="horizontal", labels=False)
        self.extend(
            [
                self._image,
                self._prompts,
                self._example,
                self._options,
                self._source,
                row(widgets=[self._browse_file, self._browse_dir], label=""),
                self._device,
                self._precision,
                row(widgets=[self._run_btn, self._cancel_btn], label=""),
                self._progress,
                self._status,
                self._threshold,
                self._min_size,
                self._show_probs,
                self._classes,
                row(widgets=[self._export_format, self._export_btn], label="Export"),
            ]
        )

    def _polish(self) -> None:
        """Compact layout: wrapped messages (so the dock stays narrow) and a short prompt box."""
        self._prompts.native.setPlaceholderText("e.g. nucleus, cell membrane")
        self._prompts.native.setMaximumHeight(96)
        for label in (self._status, self._classes):
            label.native.setWordWrap(True)
        self.native.setMaximumWidth(460)

    # --- wiring ---------------------------------------------------------------------------------

    def _connect(self) -> None:
        self._run_btn.changed.connect(self.run)
        self._cancel_btn.changed.connect(self.cancel)
        self._export_btn.changed.connect(self.export_masks)
        self._example.use_result.changed.connect(self._use_result_as_example)
        self._browse_file.changed.connect(partial(self._browse, folder=False))
        self._browse_dir.changed.connect(partial(self._browse, folder=True))
        self._threshold.changed.connect(self._relabel)
        self._min_size.changed.connect(self._relabel)
        self._show_probs.changed.connect(lambda show: show and self._results.show_probabilities())
        self._enter_filter = _EnterRuns(self.run)
        self._prompts.native.installEventFilter(self._enter_filter)
        layers = self._viewer.layers
        for event in (layers.events.inserted, layers.events.removed, layers.events.moved):
            event.connect(self._image.reset_choices)
        layers.selection.events.active.connect(self._on_active)
        self._save_timer = QTimer(self.native, singleShot=True, interval=300)  # dies with the widget
        self._save_timer.timeout.connect(self._save_settings)
        for w in (
            self._prompts,
            self._source,
            self._device,
            self._precision,
            self._threshold,
            self._min_size,
            self._show_probs,
            self._options.region,
            self._options.tiling,
            self._options.overlap,
        ):
            w.changed.connect(lambda *_: self._save_timer.start())

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self._viewer.layers if _layers.is_input_image(layer)]

    def _on_active(self, event: Any = None) -> None:
        active = self._viewer.layers.selection.active
        if _layers.is_input_image(active):
            self._image.reset_choices()
            self._image.value = active

    def _run_options(self) -> Any:
        """The options set in the main controls (the panel adds its own for a layer)."""
        from ..options import SegmentOptions

        return SegmentOptions(
            mode=self._options.tiling.value,
            overlap=int(self._options.overlap.value),
            threshold=float(self._threshold.value),
            min_size=int(self._min_size.value),
        )

    def _settings(self, export_folder: str | None = None) -> Settings:
        return Settings(
            model_source=self._source.value.strip(),
            device=self._device.value,
            precision=self._precision.value,
            show_probabilities=bool(self._show_probs.value),
            prompts=self._prompts.value,
            export_folder=load_settings().export_folder if export_folder is None else export_folder,
            region=self._options.region.value,
            options=self._run_options(),
        )

    def _save_settings(self) -> None:
        save_settings(self._settings())

    def _browse(self, _value: Any = None, *, folder: bool) -> None:
        from qtpy.QtWidgets import QFileDialog

        if folder:
            path = QFileDialog.getExistingDirectory(self.native, "Model folder (save_pretrained)")
        else:
            path, _ = QFileDialog.getOpenFileName(
                self.native, "Model checkpoint", "", "Checkpoints (*.pth *.pt *.bin *.safetensors)"
            )
        if path:
            self._source.value = path

    # --- messages -------------------------------------------------------------------------------

    def _say(self, message: str, level: str = "info") -> None:
        """Show ``message`` in the widget and as a napari notification."""
        self._status.value = message
        {"info": show_info, "warning": show_warning, "error": show_error}[level](message)

    # --- running --------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._worker is not None

    def _selected_image(self) -> Any:
        """The Image layer to segment, or None (after telling the user what to select)."""
        layer = self._image.value
        if layer is None:
            active = self._viewer.layers.selection.active
            hint = f"'{active.name}' is a {type(active).__name__} layer; " if active is not None else ""
            self._say(f"{hint}CLIPSeg needs an Image layer: open or select an image first.", "warning")
        return layer

    def _example_prompt(self, layer: Any) -> tuple[Any, dict[str, Any]]:
        """The visual prompt of the example section and its record entry (ValueError if unusable)."""
        visual = self._example.build(layer)
        entry = {
            "layer": self._example.support.value.name,
            "mode": visual.mode,
            "weight": visual.weight,
            "regions": len(visual.masks),
            "image": (self._example.example_image.value or layer).name,
        }
        return visual, entry

    def _request(self) -> RunRequest | None:
        """Everything a run needs; None (after telling the user why) when a run cannot start."""
        layer = self._selected_image()
        if layer is None:
            return None
        prompts: list = split_prompts(self._prompts.value)
        if not prompts and not self._example.active:
            self._say("Type at least one prompt (one per line or comma-separated), or choose an example.", "warning")
            return None
        try:
            options = self._options.apply(self._run_options(), layer)
            read = _layers.read_image(
                layer, self._viewer.dims.current_step, options.pyramid_level, options.channel_axis
            )
            whole_stack = self._options.region.value == REGIONS[1] and len(read.spatial_shape) > 2
            options = options.replace(rgb=bool(layer.rgb), planes=None if whole_stack else [read.index])
            example = None
            if self._example.active:
                visual, example = self._example_prompt(layer)
                prompts.append(visual)
        except (ValueError, TypeError) as e:
            self._say(str(e), "warning")
            return None
        except Exception as e:  # noqa: BLE001 - any failure to read the layer is reported, not raised
            self._say(f"Cannot read image '{layer.name}': {e}", "error")
            return None
        return RunRequest(
            image_name=layer.name,
            prompts=prompts,
            names=[prompt_label(p) for p in prompts],
            data=read.data,
            options=options,
            spatial_shape=read.spatial_shape,
            layer_kwargs=read.layer_kwargs,
            example=example,
        )

    def _use_result_as_example(self, _value: Any = None) -> None:
        """Use the last result (or the selected Labels layer), as corrected, as the example."""
        active = self._viewer.layers.selection.active
        layer = active if isinstance(active, Labels) else self._results.last_layer
        if layer is None:
            self._say("Run once (or select a Labels layer) first: its selected label becomes the example.", "warning")
            return
        image = self._image.value
        index = _layers.current_index(image, self._viewer.dims.current_step) if image is not None else ()
        last = self._results.last
        if last is not None and layer is self._results.last_layer:
            name, planes = last.request.image_name, last.request.options.planes
            image = self._viewer.layers[name] if name in self._viewer.layers else image  # noqa: SIM401
            index = index if planes is None else planes[0]
        value = max(1, int(layer.selected_label))
        self._example.pin(layer, value, image, index)
        where = f" (plane {list(index)})" if index else ""
        self._say(f"Example: label {value} of '{layer.name}'{where}. Pick the next plane or image and press Run.")

    def run(self, _value: Any = None) -> None:
        """Start a run for the current inputs (refused while one is running)."""
        if self.is_running:
            self._say("A CLIPSeg run is already in progress: wait for it or press Cancel.", "warning")
            return
        request = self._request()
        if request is None:
            return
        key = ModelKey(self._source.value.strip(), self._device.value, self._precision.value)
        job = partial(self._runner.job, key, request)
        self._set_running(True)
        if SYNC:
            self._run_inline(job, request)
            return
        from napari.qt.threading import create_worker

        worker = create_worker(job, _progress={"desc": "CLIPSeg"}, _ignore_errors=True)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda value: self._on_result(*value, request=request))
        worker.errored.connect(self._on_error)
        worker.aborted.connect(lambda: self._say("Cancelled: no layer was changed."))
        worker.finished.connect(partial(self._set_running, False))
        self._worker = worker
        worker.start()

    def _run_inline(self, job: Any, request: RunRequest) -> None:
        try:
            self._on_result(*run(job(), self._on_progress), request=request)
        except Exception as e:  # noqa: BLE001 - reported like the worker's errored signal
            self._on_error(e)
        finally:
            self._set_running(False)

    def cancel(self, _value: Any = None) -> None:
        """Stop the running job at its next step; nothing it computed is shown."""
        if self._worker is not None:
            self._worker.quit()
            self._status.value = "Cancelling…"

    def _set_running(self, running: bool) -> None:
        if not running:
            self._worker = None
        self._run_btn.enabled = not running
        self._cancel_btn.enabled = running
        if running:
            self._progress.value = 0

    def _on_progress(self, event: Progress) -> None:
        self._progress.max = max(event.total, 1)
        self._progress.value = event.step
        self._status.value = f"{event.stage}…" if event.step < event.total else "done"

    def _on_error(self, error: Exception) -> None:
        self._say(describe_error(error, self._device.value), "error")

    # --- results --------------------------------------------------------------------------------

    def _on_result(self, result: SegmentationResult, record: dict, request: RunRequest) -> None:
        layer, note = self._results.add(result, record, request, probabilities=self._show_probs.value)
        self._classes.value = _layers.class_table_text(request.names)
        counts = ", ".join(f"{p} {int((result.labels == i + 1).sum())} px" for i, p in enumerate(request.names))
        self._say(f"'{layer.name}': {counts}.{note}{self._image_change_note(request)}")

    def _image_change_note(self, request: RunRequest) -> str:
        """What to tell the user when the image was closed or replaced while the run worked."""
        layers = self._viewer.layers
        image = layers[request.image_name] if request.image_name in layers else None  # noqa: SIM401 (no .get)
        if image is None:
            return f" '{request.image_name}' was closed during the run; the result is for its data at Run."
        if _layers.layer_data(image, request.options.pyramid_level) is not request.data:
            return f" '{request.image_name}' changed during the run; the result is for its data at Run: run again."
        return ""

    def _relabel(self, _value: Any = None) -> None:
        """Threshold / min size changed: new labels from cached probabilities (no model call)."""
        blocked = self._results.relabel(float(self._threshold.value), int(self._min_size.value))
        if blocked:
            self._status.value = blocked

    # --- export ---------------------------------------------------------------------------------

    def export_masks(self, _value: Any = None) -> list:
        """Write the selected (or last) Labels layer as training masks + JSON sidecar."""
        active = self._viewer.layers.selection.active
        layer = active if isinstance(active, Labels) else self._results.last_layer
        if layer is None or layer not in self._viewer.layers:
            self._say("Select a Labels layer to export.", "warning")
            return []
        folder = self.dialogs.ask_folder(self.native, load_settings().export_folder)
        if not folder:
            return []
        try:
            confirm = partial(self.dialogs.confirm, self.native)
            paths = export_labels_layer(layer, folder, self._export_format.value, confirm)
        except (OSError, ValueError) as e:
            self._say(f"Export failed: {e}", "error")
            return []
        if not paths:
            self._say("Export cancelled: no file was changed.")
            return []
        save_settings(self._settings(export_folder=str(folder)))
        self._say(f"Exported {len(paths)} files to {folder}.")
        return paths
