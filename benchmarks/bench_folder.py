"""The annotation loop at a real folder's size: per-click costs, one Learn-and-re-predict cycle, Learn time against k.

Three parts, each printed as a table and written to benchmarks/results/bench_folder.json:

* ``clicks``: a project of N images (tiny random model, 48 x 48 synthetic images, pre-labelled
  for real), then the bookkeeping of a click, median of 20: ``next()`` after a verify,
  ``status()``, ``queue()``, and ``verify()`` (which includes writing the labels' TIFF), at each N;
  and verify+next again with ``fsync`` made a no-op, side by side, so the cost of flushing the
  verified labels and the manifest to the disk (what survives a power cut) is its own column.
  Run it on the disk a project lives on (``--tmp``): on tmpfs a flush costs nothing.
* ``cycle``: a folder of synthetic 512 x 512 striped-disc images with the full-size model at the
  default precision: the first pre-label of every image (per image), then 20 images verified and
  one full cycle (a Learn, kept with force=True so every waiting image is stale, then each
  re-predicted from the store), with the
  store's size on disk; the re-prediction's cost per image against the first pre-label's.
* ``learn_k``: the full-size model, 128 x 128 images: the seconds of a Learn after the k-th
  verified image, k from 2 to 200 (a Learn at each k of the table; the examples of the images
  verified since the previous one are read from the store first, as in the heartbeat).

    python benchmarks/bench_folder.py                            # everything (about an hour on 2 cores)
    python benchmarks/bench_folder.py --parts clicks --sizes 100,1000
    python benchmarks/bench_folder.py --parts cycle --images 100  # a shorter cycle
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import napari_clipseg as ncs
from _common import write_results
from napari_clipseg.samples import striped_discs


def _median_ms(fn, repeats: int = 20) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _disc_folder(folder: Path, n: int, size: int) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for seed in range(n):
        image, labels = striped_discs(seed, size=size, count=1 + seed % 5)
        np.save(folder / f"img{seed:05d}.npy", image)
        truth[f"img{seed:05d}"] = labels
    return truth


def _verify_then_next(project, start: int = 0):
    names, labels = iter(project.names[start:]), np.zeros((48, 48), np.uint8)

    def click():
        project.verify(next(names), labels)
        project.next()

    return click


def _unflushed(fn):
    """``fn`` with ``os.fsync`` a no-op (what a click costs without flushing to the disk)."""
    import os

    def call():
        real, os.fsync = os.fsync, lambda fd: None
        try:
            fn()
        finally:
            os.fsync = real

    return call


def clicks(sizes: list[int], tmp: Path) -> list[dict]:
    source = str(ncs.save_pretrained(ncs.build_model("tiny", seed=0), tmp / "tiny"))
    spec = ncs.ModelSpec(source, precision="float32")
    rows = []
    for n in sizes:
        images = tmp / f"clicks-{n}"
        rng = np.random.default_rng(0)
        images.mkdir()
        for i in range(n):
            np.save(images / f"img{i:05d}.npy", rng.integers(0, 255, (48, 48), dtype=np.uint8))
        started = time.perf_counter()
        with ncs.open_project(images, tmp / f"p-{n}", prompts=["thing"], model=spec) as project:
            project.prelabel()
        prelabel_s = time.perf_counter() - started
        started = time.perf_counter()
        project = ncs.open_project(None, tmp / f"p-{n}")
        open_s = time.perf_counter() - started
        row = {
            "images": n,
            "prelabel_s": prelabel_s,
            "open_s": open_s,
            "verify_and_next_ms": _median_ms(_verify_then_next(project)),
            "verify_and_next_unflushed_ms": _median_ms(_unflushed(_verify_then_next(project, 20))),
            "next_ms": _median_ms(project.next),
            "status_ms": _median_ms(project.status),
            "queue_ms": _median_ms(project.queue),
        }
        project.close()
        rows.append(row)
        print(
            f"{n:6d} images: open {open_s:.2f} s, verify+next {row['verify_and_next_ms']:.1f} ms (not flushed "
            f"{row['verify_and_next_unflushed_ms']:.1f} ms), next "
            f"{row['next_ms']:.1f} ms, status {row['status_ms']:.2f} ms, queue {row['queue_ms']:.1f} ms",
            flush=True,
        )
    return rows


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def cycle(n: int, size: int, precision: str, tmp: Path) -> dict:
    source = str(ncs.save_pretrained(ncs.build_model("rd64-refined", seed=0), tmp / "full"))
    truth = _disc_folder(tmp / "cycle-images", n, size)
    spec = ncs.ModelSpec(source, precision=precision)
    project = ncs.open_project(tmp / "cycle-images", tmp / "cycle", prompts=["disc"], model=spec)
    project.model.base()  # loading (and auto's check) is not pre-labelling
    started = time.perf_counter()
    project.prelabel()
    first = (time.perf_counter() - started) / n
    for name in project.names[:20]:
        project.verify(name, truth[name])
    started = time.perf_counter()
    outcome = ncs.run(project.iter_learn(force=True))  # kept, so every waiting image is stale
    learn_s = time.perf_counter() - started
    started = time.perf_counter()
    project.prelabel()
    waiting = n - 20
    repredict = (time.perf_counter() - started) / max(waiting, 1)
    result = {
        "images": n,
        "size": size,
        "precision": project.model.base().info.precision,
        "first_prelabel_s_per_image": first,
        "learn_s": learn_s,
        "learn_kept": outcome.accepted,
        "repredict_s_per_image": repredict,
        "repredict_share_of_first": repredict / first,
        "cycle_s": learn_s + repredict * waiting,
        "store_bytes": project.store_stats().bytes,
        "store_entries": project.store_stats().entries,
        "project_bytes": _folder_bytes(tmp / "cycle"),
    }
    project.close()
    print(
        f"cycle on {n} images of {size}^2 ({result['precision']}): first pre-label {first:.3f} s/image, Learn "
        f"{learn_s:.1f} s, re-predict {repredict * 1000:.0f} ms/image ({100 * repredict / first:.1f} % of the first), "
        f"cycle {result['cycle_s']:.1f} s; store {result['store_bytes'] / 2**20:.0f} MB",
        flush=True,
    )
    return result


def learn_k(ks: list[int], precision: str, tmp: Path) -> list[dict]:
    source = str(ncs.save_pretrained(ncs.build_model("rd64-refined", seed=0), tmp / "full-k"))
    truth = _disc_folder(tmp / "k-images", max(ks) + 4, 128)
    spec = ncs.ModelSpec(source, precision=precision)
    rows = []
    with ncs.open_project(tmp / "k-images", tmp / "k", prompts=["disc"], model=spec) as project:
        project.prelabel()
        names = iter(project.names)
        verified = 0
        for k in ks:
            while verified < k:
                name = next(names)
                project.verify(name, truth[name])
                verified += 1
            started = time.perf_counter()
            ncs.run(project.iter_learn())
            seconds = time.perf_counter() - started
            rows.append({"k": k, "learn_s": seconds, "kept": project.last_learn.accepted})
            print(f"Learn after {k:4d} verified images: {seconds:.2f} s ({'kept' if rows[-1]['kept'] else 'refused'})")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="clicks,cycle,learn_k")
    parser.add_argument("--sizes", default="100,1000,10000", help="clicks: project sizes")
    parser.add_argument("--images", type=int, default=1000, help="cycle: images in the folder")
    parser.add_argument("--size", type=int, default=512, help="cycle: image side")
    parser.add_argument("--ks", default="2,5,10,25,50,100,200", help="learn_k: verified images")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--tmp", help="where the projects are made (default: the system's temporary folder)")
    args = parser.parse_args()
    torch.manual_seed(0)
    parts = args.parts.split(",")
    results = {}
    with tempfile.TemporaryDirectory(dir=args.tmp) as folder:
        tmp = Path(folder)
        if "clicks" in parts:
            results["clicks"] = clicks([int(s) for s in args.sizes.split(",")], tmp)
        if "cycle" in parts:
            results["cycle"] = cycle(args.images, args.size, args.precision, tmp)
        if "learn_k" in parts:
            results["learn_k"] = learn_k([int(k) for k in args.ks.split(",")], args.precision, tmp)
    print(f"wrote {write_results('bench_folder', results)}")


if __name__ == "__main__":
    main()
