"""The dock's model fields (source, decoder, device, precision): they describe one :class:`ModelSpec`."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from magicgui.widgets import ComboBox, Container, LineEdit, PushButton

from ..segmentation.model_spec import ModelSpec
from .dock_fit import fit_labels, once_docked

DECODER_TIP = "A fine-tuned decoder folder (Learn from corrections); empty: the model's own"


class ModelPanel(Container):
    """Which model the dock runs; :meth:`spec` is what the worker loads (once per spec).

    ``choose(folder)`` asks the user for a model file or folder (None when cancelled).
    """

    def __init__(self, spec: ModelSpec, available: list[str], choose: Callable[[bool], str | None]) -> None:
        super().__init__(labels=False)
        self._choose = choose
        self.source = LineEdit(
            label="Model", value=spec.source, tooltip="Hub id, a transformers folder, or an original .pth checkpoint"
        )
        self.browse_file, self.browse_dir = PushButton(text="File…"), PushButton(text="Folder…")
        self.decoder = LineEdit(label="Decoder", value=spec.decoder or "", tooltip=DECODER_TIP)
        devices = ["auto", *available]
        self.device = ComboBox(label="Device", choices=devices, value=spec.device if spec.device in devices else "auto")
        self.precision = ComboBox(label="Precision", choices=self._precision_choices)
        self.precision.value = spec.precision if spec.precision in self.precision.choices else "auto"
        # the buttons on a row of their own, under the Model field (beside a label column they
        # made the narrow dock's widest row); the two forms' labels are made one width when docked
        browse = Container(layout="horizontal", labels=False, widgets=[self.browse_file, self.browse_dir])
        lower = Container(labels=True, widgets=[self.decoder, self.device, self.precision])
        self.extend([Container(labels=True, widgets=[self.source]), browse, lower])
        for part in self:
            part.margins = (0, 0, 0, 0)
        once_docked(lambda: fit_labels(*self.fields))  # one label column for the two forms
        self.browse_file.changed.connect(partial(self._browse, folder=False))
        self.browse_dir.changed.connect(partial(self._browse, folder=True))
        self.device.changed.connect(self.precision.reset_choices)

    @property
    def fields(self) -> list[Any]:
        """The value widgets (a change in any is a new spec, and worth saving)."""
        return [self.source, self.decoder, self.device, self.precision]

    def spec(self) -> ModelSpec:
        return ModelSpec(
            self.source.value.strip(),
            decoder=self.decoder.value.strip() or None,
            device=self.device.value,
            precision=self.precision.value,
        )

    def _precision_choices(self, _widget: Any = None) -> list[str]:
        """Only precisions that are faster on the chosen device (never an emulated one); no timing
        runs here, in the GUI thread (loading the model does it, in the worker)."""
        from ..modeling.runtime import resolve_device
        from ..precision.choice import offered_precisions

        return offered_precisions(resolve_device(self.device.value), measure=False)

    def _browse(self, _value: Any = None, *, folder: bool) -> None:
        path = self._choose(folder)
        if path:
            self.source.value = path
