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
from ..io.records import RECORD_NAME, class_names, read_record
from .metrics import SEMANTIC_KEYS, changed_fraction, class_scores, coco_ap, instance_ap, matting_errors, summarise


@dataclass(frozen=True)
class Side:
    """One side of a pair: labels, and what else is known (instances, their classes and scores, probabilities)."""

    labels: Any
    names: list[str] | None = None
    instances: Any = None
    instance_classes: list[int] | None = None
    scores: list[float] | None = None
    probabilities: Any = None


def _side(path: Path) -> Side:
    """Read an output folder (with its record) or a single image file."""
    from ..io.outputs import read_labels_file

    if not (path / RECORD_NAME).exists():
        return Side(np.asarray(read_labels_file(path)))
    record = read_record(path / RECORD_NAME)
    files = record["files"]
    get = lambda kind: np.asarray(read_labels_file(path / files[kind])) if kind in files else None  # noqa: E731
    return Side(
        get("labels"),
        class_names(record),
        get("instances"),
        record.get("instance_classes"),
        record.get("instance_scores"),
        get("probabilities"),
    )


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
        """``metrics.json``, ``metrics.csv`` (one row per image and class) and ``metrics.png``."""
        from ..atomic import write_json

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        text = io.StringIO()
        keys = ["image", "class", *SEMANTIC_KEYS]
        writer = csv.DictWriter(text, keys, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        (out / "metrics.csv").write_text(text.getvalue(), encoding="utf-8")
        paths = [write_json(out / "metrics.json", json.loads(json.dumps(self.to_dict())), overwrite=True)]
        return [*paths, out / "metrics.csv", self._plot(out / "metrics.png")]

    def _plot(self, path: Path) -> Path:
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
        fig.savefig(path)
        plt.close(fig)
        return path


def _pair(name: str, prediction: Side, truth: Side) -> tuple[list[dict], dict[str, Any]]:
    """Rows per class and the image's summary."""
    p_labels, t_labels = np.asarray(prediction.labels), np.asarray(truth.labels)
    if t_labels.dtype.kind == "f" and prediction.probabilities is not None:  # an alpha matte
        return [], {"image": name, **matting_errors(prediction.probabilities[0], t_labels)}
    if p_labels.shape != t_labels.shape:
        raise ValueError(f"{name}: prediction {p_labels.shape} and ground truth {t_labels.shape} differ in shape")
    names = prediction.names or truth.names
    values = sorted({int(v) for v in np.unique(np.concatenate([np.unique(p_labels), np.unique(t_labels)])) if v > 0})
    label = lambda v: names[v - 1] if names and v <= len(names) else str(v)  # noqa: E731
    rows = [{"image": name, "class": label(v), **class_scores(p_labels, t_labels, v)} for v in values]
    summary = {
        "image": name,
        **summarise(rows, SEMANTIC_KEYS),
        "changed_fraction": changed_fraction(p_labels, t_labels),
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


def evaluate(
    prediction: str | os.PathLike, truth: str | os.PathLike, out_dir: str | os.PathLike | None = None
) -> EvaluationReport:
    """Score predictions against ground truth (see the module docstring); writes the files to ``out_dir`` if given.

    Raises:
        ValueError: no name matches between the two sides, or a pair differs in shape.
    """
    if str(prediction).endswith(".json") and str(truth).endswith(".json"):
        truth_coco, predicted = (json.loads(Path(p).read_text(encoding="utf-8")) for p in (truth, prediction))
        report = EvaluationReport(mean=coco_ap(truth_coco, predicted))
    else:
        report = _evaluate_pairs(named_entries(prediction), named_entries(truth))
    if out_dir is not None:
        report.write(out_dir)
    return report


def _evaluate_pairs(predictions: dict[str, Path], truths: dict[str, Path]) -> EvaluationReport:
    names = sorted(set(predictions) & set(truths))
    if not names:
        raise ValueError(
            f"no prediction matches a ground-truth file by name (e.g. {next(iter(predictions), '-')!r} "
            f"vs {next(iter(truths), '-')!r})"
        )
    report = EvaluationReport(unmatched=sorted(set(predictions) ^ set(truths)))
    for name in names:
        rows, summary = _pair(name, _side(predictions[name]), _side(truths[name]))
        report.rows += rows
        report.images.append(summary)
    for cls in dict.fromkeys(r["class"] for r in report.rows):
        report.per_class[cls] = summarise([r for r in report.rows if r["class"] == cls], SEMANTIC_KEYS)
    keys = sorted({k for image in report.images for k in image if k != "image"})
    report.mean = summarise(report.images, keys)
    return report
