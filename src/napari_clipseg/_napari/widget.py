"""The CLIPSeg dock widget: prompts in, editable Labels layers out, without blocking napari.

Thin by design: it gathers inputs into a ``RunRequest``, runs the core pipeline in a napari
``thread_worker`` (:mod:`.job_control`), and updates layers on the main thread. The dock reads in
the order people work (image, prompts, Run, threshold, classes, export); the example and the
advanced settings are collapsible. ``NAPARI_CLIPSEG_SYNC=1`` runs inline (debugging).
"""

from __future__ import annotations

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
    ProgressBar,
    PushButton,
    RadioButtons,
    SpinBox,
    TextEdit,
)
from napari.layers import Image, Labels  # noqa: E402
from napari.utils.notifications import show_error, show_info, show_warning  # noqa: E402
from qtpy.QtCore import QTimer  # noqa: E402

from ..segmentation.options import SegmentOptions  # noqa: E402
from ..segmentation.postprocess import InstanceSettings  # noqa: E402
from . import layers as _layers  # noqa: E402
from .annotate_panel import AnnotatePanel  # noqa: E402
from .batch_action import ask_folder_run, report_message  # noqa: E402
from .dialogs import Dialogs  # noqa: E402
from .dock_fit import ScrollingDock, fit_dock, fit_labels, once_docked, short_dock_title, show_text  # noqa: E402
from .dock_text import DOCK_MODES, OUTPUTS, TIPS, threshold_label  # noqa: E402
from .example_panel import ExamplePanel  # noqa: E402
from .export_action import export_interactively  # noqa: E402
from .job_control import JobControl, JobSlot  # noqa: E402
from .jobs import ModelRunner, settle_heavy_imports  # noqa: E402
from .learn_action import collect_pairs, decoder_note, describe, offer_decoder  # noqa: E402
from .model_panel import ModelPanel  # noqa: E402
from .options_panel import OptionsPanel  # noqa: E402
from .prompt_box import PromptKeys  # noqa: E402
from .requests import build_request  # noqa: E402
from .result_layers import Piece, ResultLayers, RunRequest  # noqa: E402
from .sections import Section  # noqa: E402
from .settings import Settings, load_settings, save_settings  # noqa: E402

if TYPE_CHECKING:
    import napari


class ClipSegWidget(ScrollingDock):
    """Segment the selected image from text prompts or an example (see the module docstring)."""

    def __init__(self, viewer: napari.viewer.Viewer, dialogs: Dialogs | None = None) -> None:
        # full-width rows (labelled controls sit in inner forms), scrolling rather than squeezing
        # its rows or growing napari's window when sections are open
        super().__init__(labels=False)
        settle_heavy_imports()
        from ..modeling.runtime import available_devices

        self._viewer = viewer
        self.dialogs = dialogs or Dialogs()
        self._runner = ModelRunner()
        self._slot = JobSlot()  # one job at a time for the whole dock (both modes)
        self._results = ResultLayers(viewer)
        settings = load_settings()
        self._create_controls(settings, available_devices())
        self._lay_out(settings)
        self._polish(settings)
        buttons = (self._run_btn, self._cancel_btn)
        self._jobs = JobControl(
            self._runner, buttons, self._progress, self._say, self._set_status, self._device.get_value, self._slot
        )
        self._connect()
        self._on_active()
        short_dock_title(self.native, "CLIPSeg")
        once_docked(lambda: self._label_threshold(self._threshold.value))  # labels as napari draws them

    def _create_controls(self, s: Settings, available: list[str]) -> None:
        self._image = ComboBox(label="Image", choices=self._image_choices, nullable=True)
        self._prompts = TextEdit(label="Prompts", value=s.prompts, tooltip=TIPS["prompts"])
        self._run_btn, self._cancel_btn = PushButton(text="Run"), PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="Progress", min=0, max=1, value=0)
        self._status = Label(label="Status", value="Ready.")
        threshold = s.options.threshold
        # no readout box: at the dock's width it would leave the slider no room for its track
        self._threshold = FloatSlider(label=threshold_label(threshold), min=0.0, max=1.0, step=0.01, readout=False)
        self._threshold.value = threshold
        self._min_size = SpinBox(label="Min. size", max=10_000_000, tooltip=TIPS["min_size"], value=s.options.min_size)
        self._output = ComboBox(
            label="Output", choices=list(OUTPUTS), value=s.output if s.output in OUTPUTS else OUTPUTS[0]
        )
        self._split = SpinBox(label="Split (px)", max=1000, value=s.split_distance, tooltip=TIPS["split"])
        self._show_probs = CheckBox(text="Show probability maps", value=s.show_probabilities)
        self._classes = Label(label="Classes", value="")
        self._export_format = ComboBox(choices=[".tif", ".png"], value=".tif")
        self._export_btn = PushButton(text="Export…", tooltip="Export masks: labels, one mask per class, the record")
        self._folder_btn = PushButton(text="Pre-label a folder…", tooltip="Every image of a folder, with these prompts")
        self._model = ModelPanel(s.model, available, lambda folder: self.dialogs.choose_model(self.native, folder))
        self._source, self._decoder, self._device, self._precision = self._model.fields
        self._learn_btn = PushButton(text="Learn from corrections", tooltip="Fine-tune the decoder on your edits")
        self._example = ExamplePanel(self._viewer)
        self._mode = RadioButtons(
            choices=DOCK_MODES, value=s.mode if s.mode in DOCK_MODES else DOCK_MODES[0], orientation="horizontal"
        )
        self._annotate = AnnotatePanel(
            self._viewer,
            self._model.spec,
            lambda: self._prompts.value,
            self.dialogs,
            self._notify,
            loader=self._runner.model,  # one model, one set of options for both modes
            slot=self._slot,
            options=lambda: self._options.folder_options(self._run_options()),
            use_decoder=self._use_decoder,
        )
        self._options = OptionsPanel(self._viewer)
        self._options.restore(s)

    def _lay_out(self, s: Settings) -> None:
        row = partial(Container, layout="horizontal", labels=False)
        form = partial(Container, labels=True)
        self._example_section = Section("Segment by example", [self._example], expanded="example" in s.open_sections)
        parts = [self._model, self._options, self._folder_btn]
        self._advanced = Section("Advanced", parts, expanded="advanced" in s.open_sections)
        self._image_row = form(widgets=[self._image])
        self._segment_page = Container(labels=False)
        self._segment_page.extend(
            [
                self._example_section,
                row(widgets=[self._run_btn, self._cancel_btn]),
                self._progress,
                self._status,
                form(widgets=[self._threshold, self._min_size, self._output, self._split]),
                self._show_probs,
                self._classes,
                row(widgets=[self._export_format, self._export_btn]),
                self._learn_btn,
            ]
        )
        prompts = form(widgets=[self._prompts])  # both modes: the classes of a run and of a new project
        self.extend([self._mode, self._image_row, prompts, self._segment_page, self._annotate, self._advanced])
        for part in [*self, *self._segment_page]:  # compact: napari's default window has little height to spare
            if isinstance(part, Container) and not isinstance(part, Section):
                part.margins = (0, 0, 0, 0)
        self._show_mode(s.mode)

    def _polish(self, s: Settings) -> None:
        """Compact layout: a short prompt box, wrapped messages, a narrow dock."""
        self._prompts.native.setPlaceholderText("e.g. nucleus")
        self._prompts.native.setMaximumHeight(64)
        for label in (self._status, self._classes):
            label.native.setWordWrap(True)
        self._split.visible = self._output.value == OUTPUTS[1]
        panels = (self._model, self._options, self._example)
        fit_dock(self, panels, paths=(self._source, self._decoder, self._annotate.images, self._annotate.folder))

    def _set_status(self, text: str) -> None:
        """Show ``text`` in the status line (all its lines; the tooltip holds it too)."""
        show_text(self._status, text)

    # --- wiring ---------------------------------------------------------------------------------

    def _connect(self) -> None:
        self._mode.changed.connect(self._show_mode)
        self._mode.changed.connect(lambda *_: self._save_timer.start())
        self._run_btn.changed.connect(self.run)
        self._cancel_btn.changed.connect(self.cancel)
        self._export_btn.changed.connect(self.export_masks)
        self._folder_btn.changed.connect(self.prelabel_folder)
        self._learn_btn.changed.connect(self.learn_from_corrections)
        self._example.use_result.changed.connect(self._use_result_as_example)
        self._example.support.changed.connect(self._open_example_section)
        self._threshold.changed.connect(self._relabel)
        self._threshold.changed.connect(self._label_threshold)
        self._min_size.changed.connect(self._relabel)
        self._output.changed.connect(self._instances_changed)
        self._split.changed.connect(self._instances_changed)
        self._show_probs.changed.connect(self._probabilities_changed)
        self._prompt_keys = PromptKeys(self.run)
        self._prompt_keys.install(self._prompts.native)
        self._prompt_keys.select_on_focus = bool(self._prompts.value.strip())
        layers = self._viewer.layers
        for event in (layers.events.inserted, layers.events.removed, layers.events.moved):
            event.connect(self._image.reset_choices)
        layers.selection.events.active.connect(self._on_active)
        self._save_timer = QTimer(self.native, singleShot=True, interval=300)  # dies with the widget
        self._save_timer.timeout.connect(self._save_settings)
        saved = [
            self._prompts,
            *self._model.fields,
            self._threshold,
            self._min_size,
        ]
        saved += [self._show_probs, self._output, self._split, self._options.region, self._options.tiling]
        for signal in [w.changed for w in [*saved, self._options.overlap, self._options.scale]] + [
            self._advanced.toggled
        ]:
            signal.connect(lambda *_: self._save_timer.start())
        self._example_section.toggled.connect(lambda *_: self._save_timer.start())

    def _show_mode(self, mode: str) -> None:
        self._image_row.visible = self._segment_page.visible = mode == DOCK_MODES[0]
        self._annotate.visible = mode == DOCK_MODES[1]

    def _open_example_section(self, layer: Any) -> None:
        if layer is not None:
            self._example_section.set_expanded(True)

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self._viewer.layers if _layers.is_input_image(layer)]

    def _on_active(self, event: Any = None) -> None:
        active = self._viewer.layers.selection.active
        if _layers.is_input_image(active):
            self._image.reset_choices()
            self._image.value = active

    def _run_options(self) -> SegmentOptions:
        return self._options.base_options(float(self._threshold.value), int(self._min_size.value))

    def _settings(self, export_folder: str | None = None) -> Settings:
        sections = {"example": self._example_section, "advanced": self._advanced}
        return Settings(
            model=self._model.spec(),
            show_probabilities=bool(self._show_probs.value),
            prompts=self._prompts.value,
            export_folder=load_settings().export_folder if export_folder is None else export_folder,
            region=self._options.region.value,
            output=self._output.value,
            split_distance=int(self._split.value),
            open_sections=[name for name, section in sections.items() if section.expanded],
            mode=self._mode.value,
            options=self._run_options(),
        )

    def _save_settings(self) -> None:
        save_settings(self._settings())

    def _say(self, message: str, level: str = "info") -> None:
        """Show ``message`` in the widget (wrapped, in full) and as a napari notification."""
        self._set_status(message)
        self._notify(message, level)

    @staticmethod
    def _notify(message: str, level: str = "info") -> None:
        {"info": show_info, "warning": show_warning, "error": show_error}[level](message)

    # --- running --------------------------------------------------------------------------------

    def _request(self) -> RunRequest | None:
        """Everything a run needs; None (after telling the user why) when a run cannot start."""
        layer = self._image.value
        try:
            return build_request(
                layer,
                self._viewer.layers.selection.active,
                self._prompts.value,
                self._run_options(),
                (self._options, self._example),
                self._viewer.dims.current_step,
            )
        except (ValueError, TypeError) as e:
            self._say(str(e), "warning")
        except Exception as e:  # noqa: BLE001 - any failure to read the layer is reported, not raised
            self._say(f"Cannot read image '{layer.name}': {e}", "error")
        return None

    def _use_result_as_example(self, _value: Any = None) -> None:
        """Use the last result (or the selected Labels layer), as corrected, as the example."""
        source = self._results.example_source(
            self._viewer.layers.selection.active, self._image.value, self._viewer.dims.current_step
        )
        if source is not None:
            self._example_section.set_expanded(True)
        self._say(*self._example.pin_source(source))

    def run(self, _value: Any = None) -> None:
        """Start a run for the current inputs (refused while one is running)."""
        if self._jobs.refuse_while_running():
            return
        request = self._request()
        if request is not None:
            job = partial(self._runner.job, self._model.spec(), request)
            on_result = lambda value: self._on_result(*value, request=request)  # noqa: E731
            self._jobs.start(job, on_result, "Cancelled: no layer was changed.")

    def prelabel_folder(self, _value: Any = None) -> None:
        """Pre-label every image of a folder with the dock's prompts and settings, in the worker."""
        if self._jobs.refuse_while_running():
            return
        try:
            options, instances = self._options.folder_options(self._run_options()), self._instance_settings()
        except ValueError as e:
            self._say(str(e), "warning")
            return
        chosen = ask_folder_run(self, self._prompts.value, options, instances, self._export_format.value)
        if isinstance(chosen, str):
            self._say(chosen, "warning")
        elif chosen is not None:
            job = partial(self._runner.batch_job, self._model.spec(), chosen.inputs, chosen.out_dir, chosen.settings)
            on_result = lambda report: self._say(*report_message(report))  # noqa: E731
            self._jobs.start(job, on_result, "Cancelled: images finished before keep their pre-labels.")

    def learn_from_corrections(self, _value: Any = None) -> None:
        """Fine-tune the decoder on the edited result layers, in the worker; then offer to save and use it."""
        if self._jobs.refuse_while_running():
            return
        found = collect_pairs(self._viewer)
        if isinstance(found, str):
            self._say(found, "warning")
            return
        self._say(describe(*found))

        def on_result(result: Any) -> None:  # if kept, the next run loads it, at the threshold it chose
            use = partial(self._use_decoder, threshold=result.threshold)
            self._say(*offer_decoder(self.dialogs, self.native, result, use))

        job = partial(self._runner.finetune_job, self._model.spec(), *found)
        self._jobs.start(job, on_result, "Cancelled: no decoder was made.")

    def _use_decoder(self, folder: str, threshold: Any) -> None:
        """The Segment mode runs this decoder (a project's in use, or one just fine-tuned), at its threshold."""
        self._decoder.value = folder
        if isinstance(threshold, float):
            self._threshold.value = threshold

    @property
    def is_running(self) -> bool:
        return self._jobs.is_running or self._annotate.is_running

    def cancel(self, _value: Any = None) -> None:
        """Stop the running job: inside the image tower after its current block, else at its next step."""
        self._jobs.cancel()
        self._annotate.cancel()

    # --- results --------------------------------------------------------------------------------

    def _instance_settings(self) -> InstanceSettings | None:
        return InstanceSettings.chosen(self._output.value == OUTPUTS[1], int(self._split.value))

    def _on_result(self, pieces: list[Piece], record: dict, request: RunRequest) -> None:
        layer, note = self._results.add(
            pieces, record, request, probabilities=False, instances=self._instance_settings()
        )
        if self._show_probs.value:
            note += f" {self._results.show_probabilities() or ''}".rstrip()
        self._classes.value = _layers.class_table_text(request.names)
        note += _layers.image_change_note(self._viewer, request) + decoder_note(record)
        self._say(f"'{layer.name}': {self._results.counts_text()}.{note}")

    def _label_threshold(self, value: float) -> None:
        self._threshold.label = threshold_label(value)
        fit_labels(self._threshold, self._min_size, self._output, self._split)

    def _relabel(self, _value: Any = None) -> None:
        """Threshold / min size changed: new labels from cached probabilities (no model call)."""
        blocked = self._results.relabel(float(self._threshold.value), int(self._min_size.value))
        if blocked:
            self._set_status(blocked)
        elif self._results.last_layer is not None:
            self._set_status(f"'{self._results.last_layer.name}': {self._results.counts_text()}.")

    def _instances_changed(self, _value: Any = None) -> None:
        self._split.visible = self._output.value == OUTPUTS[1]
        blocked = self._results.set_instances(self._instance_settings())
        if blocked:
            self._set_status(blocked)

    def _probabilities_changed(self, show: bool) -> None:
        message = self._results.show_probabilities() if show else self._results.hide_probabilities()
        if message:
            self._set_status(message)

    # --- export ---------------------------------------------------------------------------------

    def export_masks(self, _value: Any = None) -> list:
        """Write the selected (or last) Labels layer as training masks + record (+ instances)."""
        active = self._viewer.layers.selection.active
        layer = active if isinstance(active, Labels) else self._results.last_layer
        if layer is None or layer not in self._viewer.layers:
            self._say("Select a Labels layer to export.", "warning")
            return []
        outcome = export_interactively(layer, self._results.instances_for(layer), self._export_format.value, self)
        if outcome.folder:
            save_settings(self._settings(export_folder=outcome.folder))
        if outcome.message:
            self._say(outcome.message, outcome.level)
        return outcome.paths
