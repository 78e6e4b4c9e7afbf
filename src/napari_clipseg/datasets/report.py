"""What a dataset run did, input by input: kept as objects, written as JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write

STATUSES = ("done", "skipped", "failed")

#: The dataset-level files of an output folder, beside the inputs' folders.
REPORT_NAMES = ("report.json", "report.csv")


@dataclass
class Row:
    """One input: ``status`` is ``done`` (written now), ``skipped`` (a matching output existed) or
    ``failed`` (``error`` says why; nothing was written for it)."""

    input: str
    name: str
    status: str
    error: str = ""
    seconds: float = 0.0
    pixels: dict[str, int] = field(default_factory=dict)
    instances: int | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}; got {self.status!r}")


@dataclass
class BatchReport:
    """All rows of a run (in input order), where it wrote, and how long it took."""

    rows: list[Row]
    out_dir: Path
    seconds: float = 0.0
    coco: Path | None = None

    def with_status(self, status: str) -> list[Row]:
        return [r for r in self.rows if r.status == status]

    @property
    def failed(self) -> list[Row]:
        return self.with_status("failed")

    @property
    def ok(self) -> bool:
        """Whether every input has its outputs (done now or before)."""
        return not self.failed

    def summary(self) -> str:
        counts = ", ".join(f"{len(self.with_status(s))} {s}" for s in STATUSES)
        return f"{len(self.rows)} input(s): {counts} in {self.seconds:.1f} s; outputs in {self.out_dir}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "seconds": round(self.seconds, 3),
            "coco": str(self.coco) if self.coco else None,
            "rows": [asdict(r) for r in self.rows],
        }

    def csv_text(self) -> str:
        """One line per input; a ``pixels:<class>`` column per class."""
        classes = sorted({c for r in self.rows for c in r.pixels})
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["input", "name", "status", "error", "seconds", "instances", *(f"pixels:{c}" for c in classes)])
        for r in self.rows:
            counts = [r.pixels.get(c, "") for c in classes]
            writer.writerow([r.input, r.name, r.status, r.error, f"{r.seconds:.3f}", r.instances, *counts])
        return out.getvalue()

    def write(self) -> tuple[Path, Path]:
        """``report.json`` and ``report.csv`` in the output folder (replacing the previous run's)."""
        paths = self.out_dir / REPORT_NAMES[0], self.out_dir / REPORT_NAMES[1]
        text = json.dumps(self.to_dict(), indent=2)
        atomic_write(paths[0], lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), True)
        atomic_write(paths[1], lambda tmp: Path(tmp).write_text(self.csv_text(), encoding="utf-8"), True)
        return paths
