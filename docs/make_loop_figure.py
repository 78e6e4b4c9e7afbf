"""The annotator-effort figure of docs/annotation-loop.md, from ``benchmarks/results/bench_loop.json``.

python benchmarks/bench_loop.py && python docs/make_loop_figure.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
LABELS = {
    "a_base": "(a) no learning",
    "b_every_k": "(b) a Learn after every 4",
    "c_auto_learn": "(c) a Learn after every image",
}
COLOURS = {"a_base": "#9e9e9e", "b_every_k": "#1f77b4", "c_auto_learn": "#d62728"}


def main() -> None:
    results = json.loads((ROOT / "benchmarks" / "results" / "bench_loop.json").read_text())["results"]
    results = {name: result for name, result in results.items() if "strategies" in result}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / len(LABELS)
    for i, (strategy, label) in enumerate(LABELS.items()):
        shares = [r["strategies"][strategy]["share_of_base"] for r in results.values()]
        axes[0].bar([d + i * width for d in range(len(results))], shares, width, label=label, color=COLOURS[strategy])
    axes[0].set_xticks([d + width for d in range(len(results))], [name.replace("_", " ") for name in results])
    axes[0].set_ylabel("pixels the annotator changed\n(share of no learning)")
    axes[0].axhline(0.25, color="black", lw=0.8, ls=":")
    axes[0].set_ylim(0, 1.45)  # room for the legend above the bars
    axes[0].legend(fontsize=8, loc="upper center")
    for dataset, result in results.items():
        for strategy in ("b_every_k", "c_auto_learn"):
            steps = result["strategies"][strategy]["learn_steps"]
            xs = [s["verified"] for s in steps if s["remaining_iou"] is not None]
            ys = [s["remaining_iou"] for s in steps if s["remaining_iou"] is not None]
            style = "-" if dataset == next(iter(results)) else "--"
            axes[1].plot(
                xs, ys, style, marker="o", color=COLOURS[strategy], label=f"{dataset.replace('_', ' ')} {strategy[0]}"
            )
    axes[1].set_xlabel("images verified (a Learn after each point)")
    axes[1].set_ylabel("IoU of the images still waiting")
    axes[1].set_ylim(0, 1)
    axes[1].xaxis.get_major_locator().set_params(integer=True)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    out = ROOT / "docs" / "images" / "annotation-effort.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
