"""The vision tower on OpenVINO: the same taps as eager torch at a precision, faster on many CPUs.

OpenVINO's CPU plugin runs the tower up to its deepest tap (:class:`~.backbone.VisionTapsGraph`)
with fused kernels of its own. At ``INFERENCE_PRECISION_HINT=f32`` its taps equal eager torch's
within float32 rounding (about 3e-7 of their range), so it is an *exact* engine: precision
``"float32"`` may run on it wherever it was timed faster (:mod:`napari_clipseg.precision.choice`).
At ``bf16`` (only where the CPU has native bfloat16) it is precision ``"bfloat16"``'s tower, held
to the same accuracy guard and check on the weights as torch's bfloat16. OpenVINO is optional
(``pip install "napari-clipseg[openvino]"``): without it, everything runs on torch as before.

Converting the tower takes seconds, so the converted graph is kept on disk under the user's
cache folder, keyed by a digest of the tower's weights (the tensors themselves, so weights
changed in memory never meet a stale graph), the tapped layers, the input size and the versions
of torch, OpenVINO and this graph; only the first load of a model pays the conversion. A damaged
entry is removed and converted again. The conversion runs in a helper thread, so a cancelled load
returns at once (the conversion finishes and is kept for the next load).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import RunCancelled, check_stop
from .backbone import VisionTapsGraph

logger = logging.getLogger(__name__)

#: Set to ``0`` to never use OpenVINO (``NAPARI_CLIPSEG_OPENVINO=0``), e.g. to compare engines.
ENV = "NAPARI_CLIPSEG_OPENVINO"
#: Changes whenever :class:`~.backbone.VisionTapsGraph` changes what it computes.
GRAPH_VERSION = 1
#: The graph takes batches of up to this many images (tiles).
MAX_BATCH = 64
GRAPH_NAME = "vision-taps.xml"


def available() -> bool:
    """Whether OpenVINO can be used here (installed, and not switched off by :data:`ENV`)."""
    if os.environ.get(ENV, "1") == "0":
        return False
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def version() -> str:
    import openvino

    return openvino.__version__


def weights_digest(module: nn.Module, stop: threading.Event | None = None) -> str:
    """BLAKE2b over a module's tensors (names, shapes, bytes): what its converted graph computes."""
    digest = hashlib.blake2b(digest_size=20)
    for name, tensor in sorted(module.state_dict().items()):
        check_stop(stop)
        data = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}{tuple(data.shape)}".encode())
        digest.update(data.numpy().data)
    return digest.hexdigest()


#: OpenVINO's inference precision hint for each precision it runs.
HINTS = {"float32": "f32", "bfloat16": "bf16"}


def compile_config(precision: str, threads: int) -> dict[str, Any]:
    """The CPU plugin's settings: the precision asked for (never its own default, which is
    bfloat16 on CPUs that have it), this process's threads, one image at a time."""
    return {
        "INFERENCE_PRECISION_HINT": HINTS[precision],
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
    }


class VisionEngine:
    """The compiled tower: :meth:`taps` gives what :func:`~.backbone.vision_taps` gives for
    ``side`` x ``side`` images at ``precision``, one image per request (a Cancel waits for at most one)."""

    def __init__(self, compiled: Any, side: int, grid: tuple[int, int], layers: int, precision: str) -> None:
        self.compiled, self.side, self.grid, self.layers = compiled, side, grid, layers
        self.precision = precision

    def fits(self, pixel_values: torch.Tensor) -> bool:
        return (
            pixel_values.device.type == "cpu"
            and pixel_values.dtype == torch.float32
            and tuple(pixel_values.shape[-2:]) == (self.side, self.side)
        )

    def taps(self, pixel_values: torch.Tensor, between: Callable[[], None] | None = None) -> list[torch.Tensor]:
        request = self.compiled.create_infer_request()  # one per call: safe from several threads
        per_image: list[list[torch.Tensor]] = []
        for image in pixel_values.detach().contiguous():
            results = request.infer({0: image[None].numpy()})
            per_image.append([torch.from_numpy(results[i].copy()) for i in range(self.layers)])
            if between is not None:
                between()
        return [torch.cat([taps[i] for taps in per_image]) for i in range(self.layers)]


def cache_key(visual: nn.Module, layers: tuple[int, ...], side: int, stop: threading.Event | None = None) -> str:
    identity = f"{weights_digest(visual, stop)} {layers} {side} {torch.__version__} {version()} {GRAPH_VERSION}"
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


#: Cache folders found unwritable in this session (said once each).
_UNWRITABLE: set[str] = set()


def _convert(visual: nn.Module, layers: tuple[int, ...], side: int, target: Path) -> None:
    """Export the tower with torch.export and write OpenVINO's graph to ``target`` (all or nothing)."""
    import openvino as ov

    graph = VisionTapsGraph(visual, layers, side).eval()
    example = torch.zeros(2, 3, side, side)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        exported = torch.export.export(graph, (example,), dynamic_shapes=({0: batch},))
    converted = ov.convert_model(exported)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=target.parent, prefix=".converting-"))
    try:
        ov.save_model(converted, str(stage / GRAPH_NAME), compress_to_fp16=False)
        try:
            os.replace(stage, target)
        except OSError:
            if not (target / GRAPH_NAME).is_file():  # not another process's finished conversion
                raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _converted(visual: nn.Module, layers: tuple[int, ...], side: int, folder: Path, stop: threading.Event | None):
    """Convert in a helper thread, waiting for it while ``stop`` is clear (RunCancelled when set)."""
    failure: list[BaseException] = []

    def work() -> None:
        try:
            _convert(visual, layers, side, folder)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            failure.append(e)

    thread = threading.Thread(target=work, name="napari-clipseg openvino conversion", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.05)
        if stop is not None and stop.is_set():
            raise RunCancelled("model loading stopped on request (the OpenVINO conversion finishes in the background)")
    if failure:
        raise failure[0]


def _compile(path: Path, threads: int, precision: str) -> Any:
    import openvino as ov

    core = ov.Core()
    return core.compile_model(core.read_model(str(path)), "CPU", compile_config(precision, threads))


def vision_engine(
    visual: nn.Module,
    layers: tuple[int, ...],
    side: int,
    cache: Path,
    stop: threading.Event | None = None,
    precision: str = "float32",
) -> VisionEngine:
    """The tower ``visual`` up to block ``layers[-1]`` for ``side`` px images, compiled by OpenVINO
    at ``precision`` (converted once and kept under ``cache``; see the module docstring).

    Raises:
        RunCancelled: ``stop`` was set.
        ImportError: OpenVINO is not installed.
    """
    folder = cache / "openvino" / cache_key(visual, layers, side, stop)
    threads = torch.get_num_threads()
    if (folder / GRAPH_NAME).is_file():
        try:
            compiled = _compile(folder / GRAPH_NAME, threads, precision)
        except Exception as e:  # noqa: BLE001 - a damaged entry: converted again
            logger.warning("the converted tower in %s cannot be read (%s): converting it again", folder, e)
            shutil.rmtree(folder, ignore_errors=True)
        else:
            check_stop(stop)
            return _engine(compiled, visual, layers, side, precision)
    logger.info("converting the vision tower for OpenVINO (once per model; kept in %s)", folder)
    try:
        _converted(visual, layers, side, folder, stop)
    except OSError as e:  # an unwritable cache (read-only home, shared install): converted, not kept
        if str(cache) not in _UNWRITABLE:
            _UNWRITABLE.add(str(cache))
            logger.warning("cannot keep the converted vision tower in %s (%s): it is converted on every load", cache, e)
        with tempfile.TemporaryDirectory(prefix="napari-clipseg-openvino-") as scratch:
            _converted(visual, layers, side, Path(scratch) / "tower", stop)
            check_stop(stop)
            compiled = _compile(Path(scratch) / "tower" / GRAPH_NAME, threads, precision)
        return _engine(compiled, visual, layers, side, precision)
    check_stop(stop)
    return _engine(_compile(folder / GRAPH_NAME, threads, precision), visual, layers, side, precision)


def _engine(compiled: Any, visual: nn.Module, layers: tuple[int, ...], side: int, precision: str) -> VisionEngine:
    grid = side // visual.conv1.kernel_size[0]
    return VisionEngine(compiled, side, (grid, grid), len(layers), precision)
