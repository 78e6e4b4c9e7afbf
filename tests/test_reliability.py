"""The reliability catalogue (docs/reliability.md): every bad input a clear error, every fault a clean stop.

Each case is one row of the catalogue: what a careless or hostile user passes, the error type, and
words the message must contain (the problem and the fix). ``test_catalogue_is_documented``
keeps docs/reliability.md and these tables in step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import napari_clipseg as ncs
from conftest import tree_snapshot
from napari_clipseg.segmentation.postprocess import labels_from_probabilities

ROOT = Path(__file__).resolve().parents[1]


class Ctx:
    """What a case may use: the tiny model, a predictor with an image set, and a few images."""

    def __init__(self, model):
        self.model = model
        self.predictor = ncs.ClipSegPredictor(model)
        self.predictor.set_image(np.zeros((64, 64), np.uint8))
        self.image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        self.mask = np.zeros((64, 64), bool)
        self.mask[10:40, 10:40] = True

    def segment(self, image, prompts="x", **options):
        return ncs.segment(image, prompts, predictor=self.predictor, **options)

    def fresh(self):
        return ncs.ClipSegPredictor(self.model)


P = pytest.param
API_CASES = [
    P(lambda c: c.predictor.predict(None), TypeError, "a text, a VisualPrompt, or a list", id="predict-none"),
    P(lambda c: c.predictor.predict(5), TypeError, "a text, a VisualPrompt, or a list", id="predict-int"),
    P(lambda c: c.predictor.predict([]), ValueError, "at least one prompt", id="predict-empty-list"),
    P(lambda c: c.predictor.predict(["a", " "]), ValueError, "must not be empty", id="predict-blank"),
    P(lambda c: c.predictor.predict(["a", 3]), TypeError, "each prompt must be a text", id="predict-number-item"),
    P(lambda c: c.fresh().predict("a"), RuntimeError, r"set_image\(image\)", id="predict-before-set-image"),
    P(lambda c: c.fresh().set_image(np.zeros((20, 128, 128))), ValueError, "ambiguous.*ncs.segment", id="zstack"),
    P(lambda c: c.fresh().set_image(np.zeros((64, 64, 5))), ValueError, r"ambiguous.*channels=", id="five-channels"),
    P(lambda c: c.fresh().set_image(np.zeros((2, 3, 64, 64))), ValueError, "got shape", id="four-d-plane"),
    P(lambda c: c.fresh().set_image(np.zeros((1, 1))), ValueError, "at least 16x16", id="one-pixel"),
    P(lambda c: c.fresh().set_image(np.zeros((0, 32))), ValueError, "empty", id="empty-image"),
    P(lambda c: c.fresh().set_image(np.zeros((32, 32), complex)), TypeError, "np.abs", id="complex-image"),
    P(lambda c: c.fresh().set_image(np.empty((32, 32), object)), TypeError, "real numbers", id="object-image"),
    P(lambda c: c.fresh().set_image(np.full((32, 32), "a")), TypeError, "real numbers", id="string-image"),
    P(lambda c: ncs.ClipSegPredictor("some/dir"), TypeError, "load it first", id="predictor-from-text"),
    P(lambda c: ncs.ClipSegPredictor(None), TypeError, "needs a loaded model", id="predictor-from-none"),
    P(lambda c: c.segment(c.image, threshold=float("nan")), ValueError, r"\[0, 1\]; got nan", id="nan-threshold"),
    P(lambda c: c.segment(c.image, threshold=float("inf")), ValueError, r"\[0, 1\]", id="inf-threshold"),
    P(lambda c: c.segment(c.image, threshold=-0.1), ValueError, r"\[0, 1\]", id="negative-threshold"),
    P(lambda c: c.segment(c.image, threshold="0.4"), TypeError, "must be a number", id="text-threshold"),
    P(lambda c: c.segment(c.image, threshold=True), TypeError, "must be a number", id="bool-threshold"),
    P(lambda c: c.segment(c.image, ["a", "b", "c"], threshold=[0.2, 0.3]), ValueError, "2 thresholds for 3", id="threshold-count"),
    P(lambda c: c.segment(c.image, min_size="10"), TypeError, "whole number of pixels", id="text-min-size"),
    P(lambda c: c.segment(c.image, min_size=-1), ValueError, "at least 0", id="negative-min-size"),
    P(lambda c: c.segment(c.image, min_size=2.5), TypeError, "whole number", id="float-min-size"),
    P(lambda c: c.segment(c.image, tile_size=100), TypeError, "unknown option.*valid options", id="unknown-option"),
    P(lambda c: c.segment(c.image, mode="sliced"), ValueError, "mode must be one of", id="unknown-mode"),
    P(lambda c: c.segment(c.image, overlap=400), ValueError, r"overlap must be in \[0, 351\]", id="overlap-too-big"),
    P(lambda c: c.segment(c.image, batch_size=0), ValueError, "batch_size must be at least 1", id="batch-zero"),
    P(lambda c: c.segment(c.image, channels=(0, 1)), ValueError, "three indices", id="two-channels"),
    P(lambda c: c.segment(c.image, channels=(0, 1, 9)), ValueError, "ask for channel 9.*has 3", id="channel-out-of-range"),
    P(lambda c: c.segment(np.zeros((2, 40, 56)), channel_axis=3), ValueError, "channel_axis 3", id="channel-axis-bad"),
    P(lambda c: c.segment(c.image, intensity=(5, 1)), ValueError, "high > low", id="intensity-inverted"),
    P(lambda c: c.segment(c.image, intensity=(0, float("nan"))), ValueError, "two finite numbers", id="intensity-nan"),
    P(lambda c: c.segment(np.zeros((2, 32, 32)), planes=[(5,)]), ValueError, r"plane \(5,\) does not exist", id="plane-missing"),
    P(lambda c: c.segment(np.zeros((2, 32, 32)), planes=[(-1,)]), ValueError, "index tuples", id="plane-negative"),
    P(lambda c: c.segment(c.image, ["a", "b", "a"]), ValueError, "'a' is given more than once", id="duplicate-prompts"),
    P(lambda c: c.segment(np.zeros((8, 8))), ValueError, "8x8 pixels.*at least 16x16", id="eight-pixels"),
    P(lambda c: c.segment(np.zeros((512, 512, 2))), ValueError, "rgb=True or channel_axis", id="channels-last-not-rgb"),
    P(lambda c: c.segment(np.zeros((2, 32, 32), complex)), TypeError, "real numbers", id="complex-stack"),
    P(lambda c: c.segment(np.array([[object()] * 32] * 32)), TypeError, "real numbers", id="object-stack"),
    P(lambda c: c.segment(np.zeros((3,))), ValueError, "at least 2 spatial axes", id="one-d-data"),
    P(lambda c: c.segment(np.zeros((2, 32, 32)), [ncs.VisualPrompt(c.mask[:32, :32])]), ValueError, "needs image=", id="visual-on-stack"),
    P(lambda c: c.segment(c.image, rgb="yes"), TypeError, "rgb must be True, False or None", id="rgb-text"),
    P(lambda c: labels_from_probabilities(np.zeros((1, 4, 4)), float("nan")), ValueError, r"got nan", id="labels-nan"),
    P(lambda c: labels_from_probabilities(np.zeros((3, 4, 4)), [0.1, 0.2]), ValueError, "2 thresholds for 3", id="labels-count"),
    P(lambda c: labels_from_probabilities(np.zeros((1, 4, 4)), 0.4, "10"), TypeError, "whole number", id="labels-min-size"),
    P(lambda c: ncs.VisualPrompt(np.ones((64, 64, 1), bool)), ValueError, r"2D \(Y, X\); got shape \(64, 64, 1\)", id="mask-yx1"),
    P(lambda c: ncs.VisualPrompt(np.ones((64, 64, 3), np.uint8)), ValueError, r"got shape \(64, 64, 3\)", id="mask-rgb"),
    P(lambda c: ncs.VisualPrompt(np.full((64, 64), np.nan)), ValueError, "no NaN", id="mask-nan"),
    P(lambda c: ncs.VisualPrompt(np.full((64, 64), 2.0)), ValueError, r"values in \[0, 1\]", id="mask-above-one"),
    P(lambda c: ncs.VisualPrompt(np.full((64, 64), 1j)), TypeError, "bool, integer labels or floats", id="mask-complex"),
    P(lambda c: ncs.VisualPrompt([]), ValueError, "at least one support mask", id="mask-empty-list"),
    P(lambda c: c.predictor.predict([ncs.VisualPrompt(np.ones((32, 32), bool))]), ValueError, "draw the example on the image", id="mask-other-shape"),
    P(lambda c: c.predictor.predict([ncs.VisualPrompt(np.zeros((64, 64), bool))]), ValueError, "empty", id="mask-empty-region"),
    P(lambda c: c.predictor.predict([ncs.VisualPrompt(np.pad(np.ones((1, 1), bool), ((10, 53), (10, 53))))]), ValueError, "only", id="mask-tiny"),
    P(lambda c: ncs.VisualPrompt(c.mask, mode="sepia"), ValueError, "unknown visual prompt mode", id="visual-mode"),
    P(lambda c: ncs.VisualPrompt(c.mask, weight=1.5), ValueError, r"weight must lie in \[0, 1\]", id="visual-weight"),
    P(lambda c: ncs.VisualPrompt(c.mask, text=" "), ValueError, "must not be empty", id="visual-blank-text"),
    P(lambda c: ncs.load_model(None), TypeError, "a hub id, a folder or a file path", id="load-none"),
    P(lambda c: ncs.load_model(42), TypeError, "got int", id="load-number"),
    P(lambda c: ncs.read_record(Path("no-such-record.json")), OSError, "no-such-record", id="record-missing"),
]  # fmt: skip


@pytest.fixture(scope="module")
def ctx(tiny_model):
    return Ctx(tiny_model)


@pytest.mark.parametrize(("call", "error", "message"), API_CASES)
def test_bad_api_input_is_a_clear_error(ctx, call, error, message):
    with pytest.raises(error, match=message):
        call(ctx)


# --- weights: every damaged or hostile checkpoint is named, and nothing on disk changes --------


def _copy_model(tiny_model_dir, tmp_path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, target)
    return target


def _edit_config(directory: Path, change) -> None:
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(change(config)))


def _edit_state(directory: Path, change) -> None:
    state = safetensors.torch.load_file(directory / "model.safetensors")
    change(state)
    safetensors.torch.save_file(state, directory / "model.safetensors")


def _shard(directory: Path, weight_map) -> None:
    shutil.move(directory / "model.safetensors", directory / "model-00001-of-00001.safetensors")
    (directory / "model.safetensors.index.json").write_text(json.dumps(weight_map))


def _unrelated_pth(directory: Path) -> Path:
    torch.save({"encoder.weight": torch.zeros(2, 2), "head.bias": torch.zeros(2)}, directory / "other.pth")
    return directory / "other.pth"


def _nan(tensor_name: str, value: float):
    def change(state):
        state[tensor_name][0] = value

    return change


FIRST_DECODER_KEY = "decoder.film_mul.weight"
Q_KEY = "clip.vision_model.encoder.layers.0.self_attn.q_proj.weight"
WEIGHT_CASES = [
    P(lambda d: _unrelated_pth(d), ncs.ArchitectureMismatchError, "not a CLIPSeg checkpoint.*encoder.weight", id="unrelated-pth"),
    P(lambda d: _edit_state(d, lambda s: s.update({Q_KEY: s[Q_KEY][:8]})), ncs.ArchitectureMismatchError, "different shapes", id="qkv-shape-mismatch"),
    P(lambda d: _edit_config(d, lambda c: [c]), ncs.CorruptWeightsError, "must hold a JSON object.*list", id="config-is-a-list"),
    P(lambda d: _edit_config(d, lambda c: {**c, "vision_config": {**c["vision_config"], "patch_size": 0}}), ncs.ArchitectureMismatchError, "patch_size must be a whole number >= 1", id="patch-size-zero"),
    P(lambda d: _edit_config(d, lambda c: {**c, "reduce_dim": -4}), ncs.ArchitectureMismatchError, "reduce_dim must be", id="negative-width"),
    P(lambda d: _edit_config(d, lambda c: {**c, "model_type": "bert"}), ncs.ArchitectureMismatchError, "'bert' model, not CLIPSeg", id="other-model-type"),
    P(lambda d: _edit_config(d, lambda c: {**c, "vision_config": {**c["vision_config"], "num_channels": 1}}), ncs.ArchitectureMismatchError, "3-channel", id="one-channel-tower"),
    P(lambda d: _shard(d, "{broken"), ncs.CorruptWeightsError, r"index\.json is not a valid shard index", id="index-not-json"),
    P(lambda d: _shard(d, {"metadata": {}}), ncs.CorruptWeightsError, "weight_map", id="index-without-weight-map"),
    P(lambda d: _shard(d, {"weight_map": {"x": "../elsewhere/x.safetensors"}}), ncs.UnsafeWeightsError, "outside its folder", id="shard-outside-folder"),
    P(lambda d: _shard(d, {"weight_map": {"x": "/etc/passwd"}}), ncs.UnsafeWeightsError, "'/etc/passwd' outside", id="shard-absolute-path"),
    P(lambda d: _edit_state(d, _nan(FIRST_DECODER_KEY, float("nan"))), ncs.CorruptWeightsError, r"decoder.film_mul.weight holds \d+ NaN", id="nan-weights"),
    P(lambda d: _edit_state(d, _nan(Q_KEY, float("inf"))), ncs.CorruptWeightsError, "NaN or infinite", id="inf-weights"),
    P(lambda d: (d / "model.safetensors").write_bytes(b""), ncs.CorruptWeightsError, "truncated or damaged", id="empty-weights-file"),
    P(lambda d: [p.unlink() for p in d.iterdir() if p.suffix == ".safetensors"], ncs.WeightsUnavailableError, "has no weights", id="no-weights-file"),
]  # fmt: skip


@pytest.mark.parametrize(("damage", "error", "message"), WEIGHT_CASES)
def test_damaged_checkpoints_are_named_and_left_alone(damage, error, message, tiny_model_dir, tmp_path):
    directory = _copy_model(tiny_model_dir, tmp_path)
    source = damage(directory)
    source = source if isinstance(source, Path) else directory
    before = tree_snapshot(tmp_path)
    with pytest.raises(error, match=message):
        ncs.load_model(source)
    assert tree_snapshot(tmp_path) == before


# --- faults: other users, full disks, concurrent use -------------------------------------------


def _world_readable_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="ncs-shared-"))
    folder.chmod(0o755)
    return folder


def _as_another_user(action) -> str:
    """Run ``action()`` in a forked child that dropped root for ``nobody``; return what it printed.

    The interpreter (under root's home) cannot be started by another user, so the child is forked
    from this process, with everything it needs imported beforehand.
    """
    if os.geteuid() != 0 or not hasattr(os, "fork"):
        pytest.skip("needs root on a POSIX system, to drop to another user")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, action().encode())
            code = 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            os.write(write, f"CHILD FAILED: {type(e).__name__}: {e}".encode())
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


def test_permission_denied_is_named_not_blamed_on_the_file(tiny_model_dir, capfd):
    """As another user: an unreadable weights file is "no permission", never "truncated, delete it"."""
    from napari_clipseg.cli import main
    from napari_clipseg.io import records  # noqa: F401 - imported before the fork (the child cannot read site-packages)

    shared = _world_readable_dir()
    try:
        model = shared / "model"
        shutil.copytree(tiny_model_dir, model)
        for path in (model, *model.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        (model / "model.safetensors").chmod(0o600)  # root's own file
        locked = shared / "locked"
        locked.mkdir(mode=0o755)

        def attempt() -> str:
            try:
                ncs.load_model(model)
                load = "loaded"
            except ncs.WeightsError as e:
                load = str(e)
            rc = main(["segment", "--sample", "cell", "-p", "x", "-m", "nobody/nowhere", "-o", str(locked / "o.tif")])
            return f"LOAD: {load}\nCLI: {rc}"

        out = _as_another_user(attempt)
        assert "LOAD: no permission to read the weights file" in out, out
        assert "delete" not in out and "CLI: 2" in out
        assert "does not accept new files" in capfd.readouterr().err
        assert list(locked.iterdir()) == []
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.parametrize("target", ["labels", "probabilities"])
def test_a_full_disk_leaves_nothing_and_says_so(small_disk, target, tiny_model_dir, capsys):
    from napari_clipseg.cli import main

    elsewhere = small_disk.parent / "roomy"
    labels = small_disk / "l.npy" if target == "labels" else elsewhere / "l.npy"  # .npy: 240 kB, uncompressed
    argv = ["segment", "--sample", "coffee", "-p", "cup", "-m", str(tiny_model_dir), "-o", str(labels)]
    argv += ["--probabilities", str(small_disk / "p.npy" if target == "probabilities" else elsewhere / "p.npy")]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "no space left on the device" in err[-1]
    assert list(small_disk.iterdir()) == [] and (not elsewhere.exists() or list(elsewhere.iterdir()) == [])


def test_export_to_a_full_disk_writes_no_mask(small_disk):
    labels = np.random.default_rng(0).integers(0, 3, (600, 600), dtype=np.uint8)
    with pytest.raises(OSError, match="no space left on the device"):
        ncs.export_masks(small_disk / "export", labels, ["a", "b"], ncs.build_record(["a", "b"]), suffix=".npy")
    assert not (small_disk / "export").exists() or list((small_disk / "export").iterdir()) == []


def test_one_predictor_shared_by_threads(tiny_model, rng):
    """Concurrent use is serialised: no race in the caches, every answer as if alone."""
    predictor = ncs.ClipSegPredictor(tiny_model)
    predictor.text_cache = type(predictor.text_cache)(maxsize=2)  # constant eviction: the old race
    image = rng.random((48, 48)).astype(np.float32)
    prompts = [f"thing {i}" for i in range(12)]
    predictor.set_image(image)
    expected = {p: predictor.predict(p) for p in prompts}
    errors, results = [], {}

    def work(offset):
        try:
            for p in prompts[offset:] + prompts[:offset]:
                results[(offset, p)] = predictor.predict(p)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for (_, p), value in results.items():
        np.testing.assert_allclose(value, expected[p], atol=1e-6)


# --- the catalogue ---------------------------------------------------------------------------


def test_catalogue_is_documented():
    """Every case id above, and every test it names, appears in docs/reliability.md."""
    doc = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    ids = [p.id for p in API_CASES + WEIGHT_CASES]
    missing = [i for i in ids if f"`{i}`" not in doc]
    assert missing == []
    named = set(re.findall(r"`(test_\w+)`", doc))
    defined = {
        m.group(1)
        for path in (ROOT / "tests").glob("test_*.py")
        for m in re.finditer(r"def (test_\w+)", path.read_text())
    }
    assert named and named <= defined, sorted(named - defined)
    rows = [line for line in doc.splitlines() if re.match(r"\| *\d+ *\|", line)]
    assert len(rows) >= 100


def test_a_group_of_files_is_written_whole_or_not_at_all(tmp_path):
    from napari_clipseg.atomic import json_writer, write_together
    from napari_clipseg.io.export import array_writer

    (tmp_path / "keep.json").write_text("precious")

    def interrupted(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half")
        raise KeyboardInterrupt

    group = [(tmp_path / "a.npy", array_writer(tmp_path / "a.npy", np.zeros(3))), (tmp_path / "b.json", interrupted)]
    with pytest.raises(KeyboardInterrupt):
        write_together(group)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]
    with pytest.raises(FileExistsError, match=r"keep\.json already exists"):
        write_together(
            [
                (tmp_path / "a.npy", array_writer(tmp_path / "a.npy", np.zeros(3))),
                (tmp_path / "keep.json", json_writer({})),
            ]
        )
    with pytest.raises(ValueError, match="same file"):
        write_together([(tmp_path / "c.json", json_writer({})), (tmp_path / "." / "c.json", json_writer({}))])
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]
        and (tmp_path / "keep.json").read_text() == "precious"
    )
