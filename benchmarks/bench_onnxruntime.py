"""Is onnxruntime worth a dependency? The vision tower up to the deepest tap (what the first
prompt on a new image costs, ~90 %), full-size rd64-refined random weights, 352x352, CPU:
eager PyTorch float32 and int8 (what the package runs) against onnxruntime float32 and its own
int8 dynamic quantization (MatMulInteger), side by side in one run, with the largest tap
difference against eager float32 relative to the tap's range.

Needs ``pip install onnx onnxscript onnxruntime`` (not dependencies of the package).
Run: ``python benchmarks/bench_onnxruntime.py [--repeats N]``; writes benchmarks/results/onnxruntime.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import napari_clipseg as ncs
from _common import interleaved_medians, write_results
from napari_clipseg.modeling import backbone


class Taps(torch.nn.Module):
    """Pixels -> the three vision taps, concatenated (one output for the exporter)."""

    def __init__(self, visual: torch.nn.Module, layers: tuple[int, ...]) -> None:
        super().__init__()
        self.visual, self.layers = visual, layers

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.cat(backbone.vision_taps(self.visual, pixels, self.layers)[0], dim=-1)


def main() -> None:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    model = ncs.build_model("rd64-refined", seed=0)
    layers = model.config.extract_layers
    exact = Taps(model.clip.visual, layers).eval()
    fast = Taps(model.with_precision("int8").towers.visual, layers).eval()
    pixels = torch.randn(1, 3, 352, 352)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path, int8_path = Path(tmp) / "taps.onnx", Path(tmp) / "taps-int8.onnx"
        with torch.no_grad():
            torch.onnx.export(
                exact, (pixels,), str(fp32_path), input_names=["pixels"], output_names=["taps"], dynamo=True
            )
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True)
        sessions = {
            "ort_float32": ort.InferenceSession(str(fp32_path), options, providers=["CPUExecutionProvider"]),
            "ort_int8": ort.InferenceSession(str(int8_path), options, providers=["CPUExecutionProvider"]),
        }
        feed = {"pixels": pixels.numpy()}
        with torch.inference_mode():
            reference = exact(pixels).numpy()
            outputs = {"torch_int8": fast(pixels).numpy()}
        outputs |= {name: session.run(None, feed)[0] for name, session in sessions.items()}

        def torch_run(module):
            def run():
                with torch.inference_mode():
                    module(pixels)

            return run

        cases = {"torch_float32": torch_run(exact), "torch_int8": torch_run(fast)}
        cases |= {name: (lambda s=session: s.run(None, feed)) for name, session in sessions.items()}
        t = interleaved_medians(cases, args.repeats)
    span = float(np.ptp(reference))
    write_results(
        "onnxruntime",
        {
            "onnxruntime": ort.__version__,
            "seconds": t,
            "speedup_vs_torch_float32": {k: t["torch_float32"] / v for k, v in t.items()},
            "max_tap_difference_relative_to_range": {
                k: float(np.abs(v - reference).max() / span) for k, v in outputs.items()
            },
        },
    )


if __name__ == "__main__":
    main()
