"""Before ``"auto"`` trusts an approximate path with a model, it checks it on that model.

The project's guard (:mod:`napari_clipseg.segmentation.guard`) was measured on random towers, which
lack the large outlier activations of real CLIP weights that int8 handles worst, and a path's
error depends on the CPU's kernels (int8 passed on an AMD EPYC and flipped 1.08 % of the pixels on
a Xeon, issue 35). So when ``load_model`` resolves ``"auto"`` to int8 or bfloat16, the loaded
weights segment two photos shipped with scikit-image (:data:`CHECKS`: the astronaut, and the
coffee cup on which the guard model's maps are flattest) with four prompts each, at float32 and at
that precision, on the machine that will run them; if the worst figures break the guard's limits,
the model runs at float32 instead, with a warning. The check costs two images at both precisions
(about two seconds), once per weights, decoder and machine: the figures are remembered beside the
speed timing.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import torch

from ..errors import check_stop, is_cancellation
from ..precision.measurements import remembered
from ..precision.timing import machine_key
from ..samples import load_sample
from .guard import LIMITS, guard_figures, passes
from .prompts import tokenize
from .transforms import to_model_input

logger = logging.getLogger(__name__)

#: Part of every remembered entry's key: a change to the check (prompts, image, figures) bumps it,
#: so no entry made by an older check (or written by hand without it) is trusted.
CHECK_VERSION = 3

#: The check's images (samples shipped with scikit-image) and their prompts.
CHECKS = {
    "astronaut": ("a person", "a flag", "a rocket", "the sky"),
    "coffee": ("a cup", "coffee", "a spoon", "a table"),
}


def _probabilities(model: Any, pixels: torch.Tensor, ids: torch.Tensor, stop: Any = None) -> np.ndarray:
    with model.inference():
        features = model.encode_image(pixels, lambda: check_stop(stop))
        conditionals = model.encode_text(ids).to(features.reduced[0].dtype)
        logits = model.decoder.decode(features.reduced, conditionals, features.grid)
    return torch.sigmoid(logits.float()).cpu().numpy()


def guard_on_model(model: Any, stop: Any = None) -> dict[str, float]:
    """The worst guard figures of ``model`` at its precision against the same weights at float32 over
    :data:`CHECKS` (``stop`` ends it between two vision blocks)."""
    exact_model, worst = model.with_precision("float32"), {}
    for name, prompts in CHECKS.items():
        pixels = to_model_input(load_sample(name)).to(model.device)
        ids = tokenize(list(prompts)).to(model.device)
        exact = _probabilities(exact_model, pixels, ids, stop)
        figures = guard_figures(exact, _probabilities(model, pixels, ids, stop))
        worst = {key: max(value, worst.get(key, value)) for key, value in figures.items()}
    return worst


def _weights_key(model: Any, stop: Any = None) -> str:
    weights, decoder = model.info.weights, model.info.decoder or {}
    identity = weights.digest(stop) or f"{weights.source} seed {weights.seed}"
    engine = "" if model.info.engine == "torch" else f" on {model.info.engine}"
    return f"{identity} | decoder {decoder.get('sha256')} | {model.info.precision}{engine}"


def verified(model: Any, stop: Any = None) -> Any:
    """``model`` if it runs exactly or its approximate path passes the guard on its weights;
    otherwise, or when the check cannot run on them, the same weights at float32 (with a warning).
    A stop asked for during the check ends it (RunCancelled), never a fallback."""
    precision = model.info.precision
    if precision == "float32":
        return model
    try:
        # one entry per weights (by hash), decoder, precision, machine and version of this check
        path = precision if model.info.engine == "torch" else f"{model.info.engine}_{precision}"
        key = f"{_weights_key(model, stop)} | {machine_key((path,))} | check {CHECK_VERSION}"
        found = remembered("precision-checks.json", key, lambda: guard_on_model(model, stop), LIMITS)
    except Exception as error:
        if is_cancellation(error):
            raise
        logger.warning("could not check %s on these weights (%s); 'auto' runs them at float32", precision, error)
        return model.with_precision("float32")
    when = "checked now" if found.now else "checked before"
    figures = found.figures
    if passes(figures):
        model.info = dataclasses.replace(model.info, checked="now" if found.now else "remembered")
        from ..precision.choice import measured_speedups, path_speedups

        speedup = path_speedups(measured_speedups(model.device, measure=False) or {}).get(precision)
        engine = "" if model.info.engine == "torch" else f" on {model.info.engine}"
        faster = f"{speedup:.1f}x faster than float32 in a timed vision block here{engine}; " if speedup else ""
        logger.info(
            "precision auto: %s (%s%s on these weights: %.2f %% of mask pixels change, within the guard's %.1f %%; "
            "measurements kept in %s)",
            precision,
            faster,
            when,
            100 * figures["flipped"],
            100 * LIMITS["flipped"],
            found.path.parent,
        )
        return model
    logger.warning(
        "precision auto: float32, because %s failed the accuracy guard on these weights (%s: %.2f %% of mask "
        "pixels change, the limit is %.1f %%; measurements kept in %s)",
        precision,
        when,
        100 * figures["flipped"],
        100 * LIMITS["flipped"],
        found.path.parent,
    )
    return model.with_precision("float32")
