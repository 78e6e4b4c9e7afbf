"""Turning what the user set in the dock into a :class:`RunRequest` (checked before any work starts)."""

from __future__ import annotations

from typing import Any

from ..segmentation.options import SegmentOptions, check_distinct, split_prompts
from ..segmentation.prompts import prompt_label
from . import layers as _layers
from .example_panel import ExamplePanel
from .options_panel import OptionsPanel
from .result_layers import RunRequest
from .settings import REGIONS


def example_prompt(example: ExamplePanel, layer: Any) -> tuple[Any, dict[str, Any]]:
    """The visual prompt of the example section and its record entry (ValueError if unusable)."""
    visual = example.build(layer)
    entry = {
        "layer": example.support.value.name,
        "mode": visual.mode,
        "weight": visual.weight,
        "regions": len(visual.masks),
        "image": (example.example_image.value or layer).name,
    }
    return visual, entry


def build_request(
    layer: Any,
    active: Any,
    prompts_text: str,
    base: SegmentOptions,
    panels: tuple[OptionsPanel, ExamplePanel],
    current_step: tuple[int, ...],
) -> RunRequest:
    """Everything a run needs for the Image layer ``layer`` (``active``: the selected layer).

    Raises:
        ValueError, TypeError: what the user must change (the message says it).
    """
    panel, example = panels
    if layer is None:
        hint = f"'{active.name}' is a {type(active).__name__} layer; " if active is not None else ""
        raise ValueError(f"{hint}CLIPSeg needs an Image layer: open or select an image first.")
    prompts: list = split_prompts(prompts_text)
    if not prompts and not example.active:
        raise ValueError("Type at least one prompt (one per line or comma-separated), or choose an example.")
    options = panel.apply(base, layer)
    read = _layers.read_image(layer, current_step, options.pyramid_level, options.channel_axis)
    region = panel.region.value
    whole_stack = region == REGIONS[1] and len(read.spatial_shape) > 2
    options = options.replace(rgb=bool(layer.rgb), planes=None if whole_stack else [read.index])
    boxes = None
    if region == REGIONS[2]:
        if panel.boxes.value is None:
            raise ValueError("Region 'inside boxes': choose the Shapes layer whose rectangles mark the regions.")
        boxes = _layers.boxes_from_shapes(panel.boxes.value, layer, read.index, options.pyramid_level)
    entry = None
    if example.active:
        visual, entry = example_prompt(example, layer)
        prompts.append(visual)
    names = [prompt_label(p) for p in prompts]
    check_distinct(names)
    return RunRequest(
        image_name=layer.name,
        prompts=prompts,
        names=names,
        data=read.data,
        options=options,
        spatial_shape=read.spatial_shape,
        layer_kwargs=read.layer_kwargs,
        example=entry,
        boxes=boxes,
    )
