"""The CLIPSeg dock widget: prompts in, editable Labels layers out, without blocking napari.

Thin by design: it gathers inputs, runs the core pipeline generator (``pipeline.iter_segment``)
in a napari ``thread_worker``, shows its progress, and creates or updates layers on the main
thread when the result arrives. Set ``NAPARI_CLIPSEG_SYNC=1`` to run inline (debugging).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from ._gl_guard import guard_triton

guard_triton()  # before torch is imported below: napari has usually drawn by now (see _gl_guard)

import numpy as np  # noqa: E402
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

from . import _layers  # noqa: E402
from .pipeline import Progress, SegmentationResult, iter_segment  # noqa: E402
from .prompts import split_prompts  # noqa: E402
from .settings import Settings, load_settings, save_settings  # noqa: E402

if TYPE_CHECKING:
    import napari

logger = logging.getLogger(__name__)
STEPS = 5  # events: model, image, prompts, post-processing, done (progress runs 0..STEPS - 1)
SYNC = os.environ.get("NAPARI_CLIPSEG_SYNC", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class RunContext:
    """What a run needs to place its result, captured when Run is pressed."""

    image_name: str
    prompts: list[str]
    plane: _layers.PlaneRequest
    spatial: dict[str, Any]


class _JobError(Exception):
    """Carries a failure out of the worker thread.

    superqt treats a RuntimeError leaving a generator worker as "aborted thread": it only warns,
    and neither ``errored`` nor ``finished`` fire. Weights errors and torch's OOM are RuntimeErrors.
    """


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

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        _settle_heavy_imports()
        from .devices import available_devices

        self._viewer = viewer
        s = load_settings()
        self._worker = None
        self._predictor = None
        self._model_key: tuple | None = None
        self._last: tuple[SegmentationResult, Labels, RunContext] | None = None

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
        devices = ["auto", *available_devices()]
        self._device = ComboBox(label="Device", choices=devices, value=s.device if s.device in devices else "auto")
        self._precision = ComboBox(label="Precision", choices=["float32", "bfloat16", "float16"], value=s.precision)
        self._threshold = FloatSlider(label="Threshold", min=0.0, max=1.0, step=0.01, value=s.threshold)
        self._min_size = SpinBox(label="Min. size (px)", min=0, max=10_000_000, value=s.min_size)
        self._show_probs = CheckBox(text="Show probability maps", value=s.show_probabilities)
        self._run_btn, self._cancel_btn = PushButton(text="Run"), PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="Progress", min=0, max=STEPS - 1, value=0)
        self._status = Label(label="Status", value="Ready.")
        self._classes = Label(label="Classes", value="")
        self._export_format = ComboBox(choices=[".tif", ".png"], value=".tif")
        self._export_btn = PushButton(text="Export masks…")
        row = partial(Container, layout="horizontal", labels=False)
        self.extend(
            [
                self._image,
                self._prompts,
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
        self._polish()
        self._connect()
        self._on_active()

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
        self._browse_file.changed.connect(partial(self._browse, folder=False))
        self._browse_dir.changed.connect(partial(self._browse, folder=True))
        self._threshold.changed.connect(self._relabel)
        self._min_size.changed.connect(self._relabel)
        self._show_probs.changed.connect(self._on_show_probs)
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
        ):
            w.changed.connect(lambda *_: self._save_timer.start())

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self._viewer.layers if _layers.is_input_image(layer)]

    def _on_active(self, event: Any = None) -> None:
        active = self._viewer.layers.selection.active
        if _layers.is_input_image(active):
            self._image.reset_choices()
            self._image.value = active

    def _settings(self) -> Settings:
        return Settings(
            self._source.value.strip(),
            self._device.value,
            self._precision.value,
            float(self._threshold.value),
            int(self._min_size.value),
            bool(self._show_probs.value),
            self._prompts.value,
            load_settings().export_folder,
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

    def _gather(self) -> RunContext | None:
        """Validate the inputs; None (after telling the user why) when a run cannot start."""
        layer = self._image.value
        if layer is None:
            active = self._viewer.layers.selection.active
            hint = f"'{active.name}' is a {type(active).__name__} layer; " if active is not None else ""
            self._say(f"{hint}CLIPSeg needs an Image layer: open or select an image first.", "warning")
            return None
        prompts = split_prompts(self._prompts.value)
        if not prompts:
            self._say("Type at least one prompt (one per line or comma-separated).", "warning")
            return None
        try:
            plane = _layers.image_plane(layer, self._viewer.dims.current_step)
        except Exception as e:  # noqa: BLE001 - any failure to read the layer is reported, not raised
            self._say(f"Cannot read image '{layer.name}': {e}", "error")
            return None
        return RunContext(layer.name, prompts, plane, _layers.spatial_kwargs(layer))

    def run(self, _value: Any = None) -> None:
        """Start a run for the current inputs (refused while one is running)."""
        if self.is_running:
            self._say("A CLIPSeg run is already in progress: wait for it or press Cancel.", "warning")
            return
        context = self._gather()
        if context is None:
            return
        key = (self._source.value.strip(), self._device.value, self._precision.value)
        job = partial(self._job, key, context, float(self._threshold.value), int(self._min_size.value))
        self._set_running(True)
        if SYNC:
            self._run_inline(job, context)
            return
        from napari.qt.threading import create_worker

        worker = create_worker(job, _progress={"total": STEPS, "desc": "CLIPSeg"}, _ignore_errors=True)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda value: self._on_result(*value, context=context))
        worker.errored.connect(self._on_error)
        worker.aborted.connect(lambda: self._say("Cancelled: no layer was changed."))
        worker.finished.connect(partial(self._set_running, False))
        self._worker = worker
        worker.start()

    def _run_inline(self, job: Any, context: RunContext) -> None:
        generator = job()
        try:
            while True:
                self._on_progress(next(generator))
        except StopIteration as stop:
            self._on_result(*stop.value, context=context)
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

    def _job(self, key: tuple, context: RunContext, threshold: float, min_size: int):
        """Worker-thread generator: load the model (once per key), run the core pipeline, and
        build the provenance record (hashing the weights file is slow: never on the main thread).

        Returns ``(SegmentationResult, record)``.
        """
        try:
            return (yield from self._steps(key, context, threshold, min_size))
        except Exception as e:
            raise _JobError(str(e)) from e

    def _steps(self, key: tuple, context: RunContext, threshold: float, min_size: int):
        from napari.utils import progress as napari_progress

        from .export import provenance

        yield Progress(0, STEPS - 1, "loading model" if key != self._model_key else "model ready")
        if key != self._model_key:
            from .predictor import ClipSegPredictor
            from .weights import load_model

            source, device, precision = key
            # downloads report to napari's activity dock
            model = load_model(source, device=device, dtype=precision, tqdm_class=napari_progress)
            self._predictor, self._model_key = ClipSegPredictor(model), key
        segment = iter_segment(
            context.plane.data, context.prompts, self._predictor, threshold=threshold, min_size=min_size
        )
        while True:
            try:
                event = next(segment)
            except StopIteration as stop:
                result = stop.value
                break
            yield Progress(event.step + 1, STEPS - 1, event.stage)
        record = provenance(
            self._predictor.model,
            image=context.image_name,
            prompts=context.prompts,
            plane=list(context.plane.index),
            threshold=threshold,
            min_size=min_size,
        )
        return result, record

    def _on_progress(self, event: Progress) -> None:
        self._progress.value = event.step
        self._status.value = f"{event.stage}…" if event.step < event.total else "done"

    def _on_error(self, error: Exception) -> None:
        if isinstance(error, _JobError) and error.__cause__ is not None:
            error = error.__cause__
        self._say(_describe_error(error, self._device.value), "error")

    # --- results --------------------------------------------------------------------------------

    def _on_result(self, result: SegmentationResult, meta: dict, context: RunContext) -> None:
        layer, note = self._write_labels(result.labels, context, meta)
        self._last = (result, layer, context)
        if self._show_probs.value:
            self._show_probabilities(result, context)
        self._classes.value = _layers.class_table_text(context.prompts)
        counts = ", ".join(f"{p} {int((result.labels == i + 1).sum())} px" for i, p in enumerate(context.prompts))
        self._say(f"'{layer.name}': {counts}.{note}")

    def _write_labels(self, labels: np.ndarray, context: RunContext, meta: dict) -> tuple[Labels, str]:
        """Update our untouched layer of the same name in place, else add a new one."""
        name, index = _layers.output_name(context.prompts), context.plane.index
        existing = self._viewer.layers[name] if name in self._viewer.layers else None  # noqa: SIM401 (no .get)
        reusable = (
            isinstance(existing, Labels)
            and _layers.clipseg_meta(existing) is not None
            and not _layers.is_edited(existing)
            and existing.data.shape == context.plane.spatial_shape
        )
        if reusable:
            data = existing.data
            data[index] = labels
            existing.metadata[_layers.META_KEY] = {**meta, "edited": False}
            existing.features = _layers.class_features(context.prompts)
            existing.refresh()
            return existing, ""
        full = np.zeros(context.plane.spatial_shape, labels.dtype) if index else labels
        if index:
            full[index] = labels
        layer = self._viewer.add_labels(
            full,
            name=name,
            metadata={_layers.META_KEY: {**meta, "edited": False}},
            features=_layers.class_features(context.prompts),
            **context.spatial,
        )
        _layers.mark_edits(layer)
        note = f" Your edits in '{existing.name}' were kept; this run is a new layer." if existing is not None else ""
        return layer, note

    def _relabel(self, _value: Any = None) -> None:
        """Threshold / min-size changed: recompute labels from cached probabilities (no model call)."""
        if self._last is None:
            return
        result, layer, context = self._last
        if layer not in self._viewer.layers:
            self._last = None
            return
        if _layers.is_edited(layer):
            self._status.value = f"'{layer.name}' has your edits, so it is left alone: run again for a new layer."
            return
        labels = result.relabel(float(self._threshold.value), int(self._min_size.value))
        data = layer.data
        data[context.plane.index] = labels
        layer.refresh()
        meta = _layers.clipseg_meta(layer)
        meta.update(threshold=result.threshold, min_size=result.min_size)

    def _on_show_probs(self, value: bool) -> None:
        if value and self._last is not None and self._last[1] in self._viewer.layers:
            self._show_probabilities(self._last[0], self._last[2])

    def _show_probabilities(self, result: SegmentationResult, context: RunContext) -> None:
        colormaps = ("magenta", "green", "cyan", "yellow", "red", "blue")
        for i, prompt in enumerate(result.prompts):
            name = f"clipseg p: {prompt}"
            plane = result.probabilities[i]
            data = np.zeros(context.plane.spatial_shape, np.float32) if context.plane.index else plane
            if context.plane.index:
                data[context.plane.index] = plane
            if name in self._viewer.layers and isinstance(self._viewer.layers[name], Image):
                self._viewer.layers[name].data = data
            else:
                self._viewer.add_image(
                    data,
                    name=name,
                    metadata={_layers.PROBABILITY_KEY: prompt},
                    colormap=colormaps[i % len(colormaps)],
                    blending="additive",
                    contrast_limits=(0.0, 1.0),
                    opacity=0.6,
                    **context.spatial,
                )

    # --- export ---------------------------------------------------------------------------------

    def _ask_folder(self) -> str:
        from qtpy.QtWidgets import QFileDialog

        return QFileDialog.getExistingDirectory(self.native, "Export masks to folder", load_settings().export_folder)

    def _confirm(self, question: str) -> bool:
        from qtpy.QtWidgets import QMessageBox

        answer = QMessageBox.question(self.native, "napari-clipseg", question)
        return answer == QMessageBox.StandardButton.Yes

    def export_masks(self, _value: Any = None) -> list:
        """Write the selected (or last) Labels layer as training masks + JSON sidecar."""
        from .export import export_masks

        active = self._viewer.layers.selection.active
        layer = active if isinstance(active, Labels) else (self._last[1] if self._last else None)
        if layer is None or layer not in self._viewer.layers:
            self._say("Select a Labels layer to export.", "warning")
            return []
        folder = self._ask_folder()
        if not folder:
            return []
        meta = dict(_layers.clipseg_meta(layer) or {})
        names = meta.pop("prompts", None) or [f"label {v}" for v in range(1, int(np.max(layer.data)) + 1)]
        record = {**meta, "layer": layer.name, "edited": _layers.is_edited(layer)}
        export = partial(export_masks, folder, np.asarray(layer.data), names, record, suffix=self._export_format.value)
        try:
            try:
                paths = export()
            except FileExistsError as e:
                if not self._confirm(f"{e}.\n\nOverwrite the existing files?"):
                    self._say("Export cancelled: no file was changed.")
                    return []
                paths = export(overwrite=True)
        except (OSError, ValueError) as e:
            self._say(f"Export failed: {e}", "error")
            return []
        save_settings(Settings(**{**self._settings().__dict__, "export_folder": str(folder)}))
        self._say(f"Exported {len(paths)} files to {folder}.")
        return paths


def _settle_heavy_imports() -> None:
    """Import torch and open_clip now, then run one full garbage collection.

    The imports add ~400k Python objects, after which a full (stop-the-world) collection takes
    ~250 ms. Done here, while opening the widget already pauses napari for the import, the
    collector has nothing pending when a run starts; otherwise it fires inside the first run and
    freezes the event loop from the worker thread. (gc.freeze would avoid it for good but would
    keep the user's deleted layers alive if they sit in reference cycles.)
    """
    import gc

    from . import predictor, weights  # noqa: F401 - torch, open_clip, safetensors

    gc.collect()


def _describe_error(error: Exception, device: str) -> str:
    """A message a user can act on, for any failure in the worker."""
    from .weights import WeightsError

    if isinstance(error, WeightsError | ValueError | FileNotFoundError):
        return str(error)
    if type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower():
        return f"Out of memory on '{device}': try a smaller image or crop, the CPU device, or bfloat16 precision."
    logger.exception("CLIPSeg run failed", exc_info=error)
    return f"CLIPSeg failed ({type(error).__name__}): {error}"
