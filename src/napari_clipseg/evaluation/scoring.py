"""``evaluate``: compare predictions with ground truth, file by file, and write CSV, JSON and a plot.

Either side is a batch output folder (one subfolder per input, with its record), a folder or glob
of label images, a single label image, or a COCO JSON file (then AP is computed with
pycocotools). Files are matched by name (the path below the folder, without suffixes). Formulas:
docs/datasets.md.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.inputs import named_entries
from ..io.records import RECORD_NAME, class_names, object_table, read_record
from .effort import effort
from .metrics import SEMANTIC_KEYS, class_scores, coco_ap, instance_ap, matting_errors, summarise


@dataclass(frozen=True)
class Side:
    """One side of a pair: labels, and what else is known (instances, their classes and scores, probabilities)."""

    labels: Any
    names: list[str] | None = None
    instances: Any = None
    instance_classes: list[int] | None = None
    scores: list[float] | None = None
    probabilities: Any = None
    recorded: bool = False  # read from a napari-clipseg output folder: its labels are labels


#: What a ground-truth image holds: class (or instance) labels, or an alpha matte in [0, 1].
TRUTH_KINDS = ("labels", "matte")


def _side(path: Path) -> Side:
    """Read an output folder (with its record) or a single image file."""
    from ..io.outputs import read_labels_file
    from ..io.records import record_file

    if not (path / RECORD_NAME).exists():
        return Side(np.asarray(read_labels_file(path)))
    record = read_record(path / RECORD_NAME)
    files = record["files"]
    get = lambda kind: (  # noqa: E731
        np.asarray(read_labels_file(record_file(path / RECORD_NAME, files[kind]))) if files.get(kind) else None
    )
    classes, scores = object_table(path / RECORD_NAME, record)
    instances = get("instances")
    return Side(
        get("labels"),
        class_names(record),
        instances,
        classes if instances is not None else None,
        scores,
        get("probabilities"),
        recorded=True,
    )


def _truth_kind(name: str, truth: Side, asked: str | None) -> str:
    """What the truth holds: as asked, labels for a recorded output or an integer image; a float
    image is never guessed (a matte and a float label image look alike)."""
    labels = np.asarray(truth.labels)
    kind = asked or ("labels" if truth.recorded or labels.dtype.kind in "biu" else None)
    if kind is None:
        low, high = (float(np.nanmin(labels)), float(np.nanmax(labels))) if labels.size else (0.0, 0.0)
        raise ValueError(
            f"{name}: the ground truth is a float image (values {low:g} to {high:g}), which could be labels or an "
            "alpha matte: say which (evaluate --truth-kind labels or matte; truth_kind= in Python)"
        )
    return kind


@dataclass
class EvaluationReport:
    """Per image and class scores, their means, AP and matting errors where they apply."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "per_class": self.per_class, "images": self.images, "unmatched": self.unmatched}

    def write(self, out_dir: str | os.PathLike) -> list[Path]:
        """``metrics.json``, ``metrics.csv`` (one row per image and class) and ``metrics.png``, all
        three or none (a full disk leaves the previous files as they were)."""
        from ..atomic import json_writer, write_together

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        text = io.StringIO()
        keys = ["image", "class", *SEMANTIC_KEYS]
        writer = csv.DictWriter(text, keys, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        table = text.getvalue()
        files = [
            (out / "metrics.json", json_writer(json.loads(json.dumps(self.to_dict())))),
            (out / "metrics.csv", lambda tmp: Path(tmp).write_text(table, encoding="utf-8")),
            (out / "metrics.png", self._plot),
        ]
        return write_together(files, overwrite=True)

    def _plot(self, path: str | os.PathLike) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        classes = list(self.per_class)
        fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(classes) + 2), 3.2), dpi=100)
        width = 0.2
        for k, key in enumerate(SEMANTIC_KEYS):
            ax.bar(
                np.arange(len(classes)) + (k - 1.5) * width, [self.per_class[c][key] for c in classes], width, label=key
            )
        ax.set_xticks(range(len(classes)), classes)
        ax.set_ylim(0, 1)
        ax.legend(ncols=4, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, 1.18), frameon=False)
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)


def _pair(name: str, prediction: Side, truth: Side, truth_kind: str | None = None) -> tuple[list[dict], dict[str, Any]]:
    """Rows per class and the image's summary."""
    p_labels, t_labels = np.asarray(prediction.labels), np.asarray(truth.labels)
    if _truth_kind(name, truth, truth_kind) == "matte":
        if prediction.probabilities is None:
            raise ValueError(
                f"{name}: an alpha matte is scored against probabilities, and the prediction has none "
                "(batch --probabilities writes them)"
            )
        return [], {"image": name, **matting_errors(prediction.probabilities[0], t_labels)}
    if t_labels.dtype.kind == "f":
        if not (np.isfinite(t_labels).all() and (t_labels == np.round(t_labels)).all() and (t_labels >= 0).all()):
            raise ValueError(f"{name}: ground truth given as labels holds values that are not whole numbers >= 0")
        t_labels = t_labels.astype(np.int64)
    if p_labels.shape != t_labels.shape:
        raise ValueError(f"{name}: prediction {p_labels.shape} and ground truth {t_labels.shape} differ in shape")
    names = prediction.names or truth.names
    values = sorted({int(v) for v in np.unique(np.concatenate([np.unique(p_labels), np.unique(t_labels)])) if v > 0})
    label = lambda v: names[v - 1] if names and v <= len(names) else str(v)  # noqa: E731
    rows = [{"image": name, "class": label(v), **class_scores(p_labels, t_labels, v)} for v in values]
    summary = {
        "image": name,
        **summarise(rows, SEMANTIC_KEYS),
        **effort(p_labels, t_labels, corrected_instances=truth.instances),
    }
    if prediction.instances is not None and truth.instances is not None:
        summary.update(
            instance_ap(
                truth.instances,
                prediction.instances,
                truth_classes=truth.instance_classes,
                prediction_classes=prediction.instance_classes,
                scores=prediction.scores,
            )
        )
    return rows, summary


def _coco_file(path: str | os.PathLike, what: str) -> Any:
    """A COCO JSON file's content, or a ValueError naming the file and what is wrong."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if what == "truth" and not (isinstance(data, dict) and isinstance(data.get("annotations"), list)):
        raise ValueError(f"{path} is not a COCO dataset (an object with images, annotations and categories)")
    if what == "prediction" and not isinstance(data, dict | list):
        raise ValueError(f"{path} is not COCO results (a list of annotations, or a dataset)")
    return data


def _coco_report(prediction: str | os.PathLike, truth: str | os.PathLike) -> EvaluationReport:
    truth_coco, predicted = _coco_file(truth, "truth"), _coco_file(prediction, "prediction")
    annotations = predicted["annotations"] if isinstance(predicted, dict) else predicted
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise ValueError(f"{prediction}: its annotations must be a list of objects")
    known = {image.get("id") for image in truth_coco.get("images", []) if isinstance(image, dict)}
    strangers = sorted({a.get("image_id") for a in annotations} - known, key=str)
    if strangers:
        raise ValueError(
            f"{prediction} has predictions on image ids the ground truth {truth} lacks ({strangers[:5]}): "
            "both must describe the same images"
        )
    return EvaluationReport(mean=coco_ap(truth_coco, predicted))


def evaluate(
    prediction: str | os.PathLike,
    truth: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    truth_kind: str | None = None,
) -> EvaluationReport:
    """Score predictions against ground truth (see the module docstring); writes the files to ``out_dir`` if given.

    Args:
        truth_kind: ``"labels"`` or ``"matte"`` (an alpha matte in [0, 1]); None: labels for
            integer images and recorded outputs, and a float image is refused rather than guessed.

    Raises:
        ValueError: no name matches between the two sides, a pair differs in shape, a float truth
            of unknown kind, or a COCO file that is not one.
    """
    if truth_kind is not None and truth_kind not in TRUTH_KINDS:
        raise ValueError(f"truth_kind must be one of {', '.join(TRUTH_KINDS)}; got {truth_kind!r}")
    if str(prediction).endswith(".json") and str(truth).endswith(".json"):
        report = _coco_report(prediction, truth)
    else:
        report = _evaluate_pairs(named_entries(prediction), named_entries(truth), truth_kind)
    if out_dir is not None:
        report.write(out_dir)
    return report


def _evaluate_pairs(predictions: dict[str, Path], truths: dict[str, Path], truth_kind: str | None) -> EvaluationReport:
    names = sorted(set(predictions) & set(truths))
    if not names:
        raise ValueError(
            f"no prediction matches a ground-truth file by name (e.g. {next(iter(predictions), '-')!r} "
            f"vs {next(iter(truths), '-')!r})"
        )
    report = EvaluationReport(unmatched=sorted(set(predictions) ^ set(truths)))
    for name in names:
        rows, summary = _pair(name, _side(predictions[name]), _side(truths[name]), truth_kind)
        report.rows += rows
        report.images.append(summary)
    for cls in dict.fromkeys(r["class"] for r in report.rows):
        report.per_class[cls] = summarise([r for r in report.rows if r["class"] == cls], SEMANTIC_KEYS)
    keys = sorted({k for image in report.images for k in image if k != "image"})
    report.mean = summarise(report.images, keys)
    return report
