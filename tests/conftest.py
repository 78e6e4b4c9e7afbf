"""Shared fixtures: offline hub, tiny random models in every on-disk format."""

from __future__ import annotations

import os
import tempfile

# Never touch the network, and never read a developer's real cache: set before huggingface_hub loads.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="ncs-hf-cache-")
os.environ["NAPARI_CLIPSEG_CONFIG_DIR"] = tempfile.mkdtemp(prefix="ncs-settings-")  # never the user's settings
os.environ["NAPARI_CLIPSEG_CACHE_DIR"] = tempfile.mkdtemp(prefix="ncs-cache-")  # nor the user's CPU timing
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch

import napari_clipseg as ncs
from napari_clipseg.samples import striped_discs

TINY_HF = {
    "text_config": {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4},
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "patch_size": 16,
        "image_size": 224,
    },
    "projection_dim": 24,
    "extract_layers": [1, 2, 3],
    "reduce_dim": 16,
    "decoder_num_attention_heads": 4,
    "decoder_intermediate_size": 40,
    "use_complex_transposed_convolution": True,
}


#: The learning rate the tiny model's tests train at: the default (1e-3) was chosen on the full-size
#: model and real images (docs/finetune.md); the tiny decoder (width 16) needs twice that to learn
#: the discs in the few steps a test can afford.
TINY_LEARNING_RATE = 2e-3


def disc_images(folder, count: int) -> dict:
    """``count`` striped-disc images saved in ``folder`` as ``disc<seed>.npy``; returns their ground truth by name."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for seed in range(count):
        image, labels = striped_discs(seed)
        np.save(folder / f"disc{seed}.npy", image)
        truth[f"disc{seed}"] = labels
    return truth


def perturb_(module: torch.nn.Module, seed: int = 0, scale: float = 0.02) -> torch.nn.Module:
    """Add noise to every parameter, so unit LayerNorms and zero biases cannot hide a mix-up."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return module


def make_hf_model(overrides: dict | None = None, seed: int = 0):
    """A random transformers CLIPSegForImageSegmentation (the oracle), in eval mode."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    cfg = {**TINY_HF, **(overrides or {})}
    for tower in ("text_config", "vision_config"):
        cfg[tower] = {**TINY_HF[tower], **(overrides or {}).get(tower, {})}
    torch.manual_seed(seed)
    return perturb_(CLIPSegForImageSegmentation(CLIPSegConfig(**cfg)), seed).eval()


def relative_error(reference: torch.Tensor, ours: torch.Tensor) -> float:
    return float((reference - ours).abs().max() / reference.abs().max())


@pytest.fixture(scope="session")
def tiny_model():
    """A tiny random model (real tokenizer vocabulary) with perturbed weights."""
    return perturb_(ncs.build_model("tiny", seed=0)).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model, tmp_path_factory):
    """``tiny_model`` saved in transformers' format."""
    return ncs.save_pretrained(tiny_model, tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def fake_hub_cache(cache, repo_id, files: dict):
    """Lay files out as huggingface_hub's cache does, so offline hub loading finds them."""
    import shutil

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for name, src in files.items():
        shutil.copy(src, snapshot / name)
    return snapshot


def tree_snapshot(root) -> dict:
    """{relative path: (size, mtime_ns)} of every file under root, to prove nothing changed."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            st = os.stat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out


# --- datasets --------------------------------------------------------------------------------

#: Prompts of the dataset tests (two classes).
DATASET_PROMPTS = ["cell", "background noise"]


def make_dataset(root, rng):
    """Three inputs: an RGB PNG, a 16-bit OME-TIFF stack with pixel sizes (in a subfolder), a .npy."""
    import imageio.v3 as iio
    import tifffile

    (root / "sub").mkdir(parents=True)
    iio.imwrite(root / "photo.png", rng.integers(0, 255, (72, 90, 3), dtype=np.uint8))
    stack = rng.integers(0, 4000, (9, 64, 70)).astype(np.uint16)
    meta = {"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.25, "PhysicalSizeZ": 2.0}
    tifffile.imwrite(root / "sub" / "stack.ome.tif", stack, ome=True, metadata=meta)
    np.save(root / "plain.npy", rng.random((66, 80)).astype(np.float32))
    return {"photo": root / "photo.png", "sub/stack": root / "sub" / "stack.ome.tif", "plain": root / "plain.npy"}


@pytest.fixture
def dataset(tmp_path, rng):
    """Three inputs in ``tmp_path/images`` (see :func:`make_dataset`), by output name."""
    return make_dataset(tmp_path / "images", rng)


def output_files(root):
    """{relative path: bytes} of every output file (reports and records left out: they hold times)."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name not in ("clipseg.json", "report.json", "report.csv"):
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, root)] = f.read()
    return out


#: Fixtures that open a napari viewer (or need Qt's event loop): their tests are in the slow tier.
VIEWER_FIXTURES = {"viewer", "widget", "make_napari_viewer", "qtbot"}
#: Words in a test's source that mean it starts another process or a dask cluster.
PROCESS_WORDS = ("subprocess", "LocalCluster", "sys.executable", "os.fork", "workers=", "--workers")


def pytest_collection_modifyitems(config, items):
    """The fast tier (``-m "not slow"``) is what needs no napari viewer, no other process, no dask
    cluster and no full-size model: mark the others ``slow`` by what they use."""
    import inspect

    for item in items:
        function = getattr(item, "function", None)
        source = inspect.getsource(function) if function is not None else ""
        if VIEWER_FIXTURES & set(getattr(item, "fixturenames", ())) or any(w in source for w in PROCESS_WORDS):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item: napari's make_napari_viewer reads ``rep_call``."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(autouse=True)
def exact_unless_timed(monkeypatch):
    """Precision "auto" resolves to float32 in every test: no path timed faster here, so what a test
    checks never depends on the machine's timing. Tests about "auto" set their own timings."""
    from napari_clipseg.precision import choice

    monkeypatch.setattr(choice, "speedups", lambda candidates, measure=True, stop=None: dict.fromkeys(candidates, 1.0))


@pytest.fixture(autouse=True)
def torch_engine_unless_asked(monkeypatch):
    """The suite runs as without the optional OpenVINO (``NAPARI_CLIPSEG_OPENVINO=0``); the tests
    about the engine switch it on (tests/test_openvino.py)."""
    monkeypatch.setenv("NAPARI_CLIPSEG_OPENVINO", "0")


@pytest.fixture(autouse=True)
def fresh_settings(tmp_path_factory, monkeypatch):
    """Each test starts from default widget settings (they persist on disk by design)."""
    monkeypatch.setenv("NAPARI_CLIPSEG_CONFIG_DIR", str(tmp_path_factory.mktemp("settings")))


# --- napari widget fixtures (napari is imported only by the tests that use them) ----------------

TIMEOUT = 60_000


@pytest.fixture
def messages(monkeypatch):
    """Every notification the widget sends, as (level, text)."""
    from napari_clipseg._napari import widget as _widget

    seen = []
    for level in ("info", "warning", "error"):
        monkeypatch.setattr(_widget, f"show_{level}", lambda text, level=level: seen.append((level, text)))
    return seen


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


class ScriptedDialogs:
    """The widget's dialogs answered from lists a test fills (see ``_napari.widget.Dialogs``)."""

    def __init__(self) -> None:
        self.folders: list[str] = []
        self.answers: list[bool] = []
        self.questions: list[str] = []

    def ask_folder(self, parent, start: str) -> str:
        return self.folders.pop(0)

    def choose_folder(self, parent, title: str, start: str) -> str:
        self.questions.append(f"{title} [{start}]")
        return self.folders.pop(0)

    def confirm(self, parent, question: str) -> bool:
        self.questions.append(question)
        return self.answers.pop(0)


@pytest.fixture
def dialogs():
    return ScriptedDialogs()


@pytest.fixture
def widget(viewer, tiny_model_dir, messages, qtbot, dialogs):
    from napari_clipseg._napari.widget import ClipSegWidget

    w = ClipSegWidget(viewer, dialogs=dialogs)
    viewer.window.add_dock_widget(w, name="CLIPSeg")
    w._source.value = str(tiny_model_dir)
    w._precision.value = "float32"  # what the widget tests check never depends on this machine's timing
    yield w
    if w.is_running:
        w.cancel()
        qtbot.waitUntil(lambda: not w.is_running, timeout=TIMEOUT)


@pytest.fixture
def astronaut(viewer):
    from napari_clipseg.samples import load_sample

    return viewer.add_image(
        load_sample("astronaut"),
        name="astronaut",
        rgb=True,
        scale=(0.5, 2.0),
        translate=(10.0, -3.0),
        units=("µm", "µm"),
    )


def click_run(widget, qtbot):
    widget._run_btn.native.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT)


def labels_layers(viewer):
    return [layer for layer in viewer.layers if layer.__class__.__name__ == "Labels"]


#: Images in the projects of the project and loop tests.
PROJECT_IMAGES = 8


@pytest.fixture
def images(tmp_path):
    """A folder of striped-disc images (the task the random base model fails) and their ground truth."""
    folder = tmp_path / "images"
    return folder, disc_images(folder, PROJECT_IMAGES)


@pytest.fixture
def spec(tiny_model_dir):
    return ncs.ModelSpec(str(tiny_model_dir), precision="float32")


@pytest.fixture
def project(images, tmp_path, spec):
    with ncs.open_project(images[0], tmp_path / "project", prompts=["disc"], model=spec) as opened:
        yield opened


@pytest.fixture
def small_disk(tmp_path):
    """A 128 KiB file system (tmpfs), to fill for real."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); test_cli injects the fault instead")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)
