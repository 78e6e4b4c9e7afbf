"""The dock's fixed words and sizes: its modes, keys, output choices, tooltips and the threshold label."""

OUTPUTS = ("classes", "classes + instances")
#: The dock's two modes: segment the image on screen, or annotate a folder in a project.
DOCK_MODES = ("Segment", "Annotate")
#: The Annotate mode's keys (docs/usage.md, "Keys of the loop"): none of napari's own. napari's own
#: "=" and "-" already step the label to paint, and "M" takes a new one.
KEYS = {"next": "PageDown", "previous": "PageUp", "skip": "Shift-PageDown", "learn": "Alt-Enter", "labels": "Alt-T"}
#: Widest the dock grows: napari's canvas keeps most of the window, and every label is whole.
DOCK_WIDTH = 210
TIPS = {
    "prompts": "One class per line or comma-separated. Enter runs, Shift+Enter adds a line.",
    "min_size": "Remove objects smaller than this many pixels",
    "split": "Instances: 0 keeps connected objects whole; else touching objects are split by a seeded "
    "watershed, with seeds at least this far apart (about an object's radius)",
}


def threshold_label(value: float) -> str:
    return f"Threshold {value:.2f}"
