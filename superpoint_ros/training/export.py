"""Export a checkpoint to TorchScript and ONNX, checked numerically against eager PyTorch
(``superpoint-export``).

Both exports take ``image`` ``(B, 1, H, W)`` float32 in [0, 1] with any batch size and any H, W
that are multiples of 8, and return ``(logits (B, 65, H/8, W/8), descriptors (B, D, H/8, W/8))``
(a tuple, in that order; descriptors L2-normalised). After writing, each file is loaded back and
run on random and real images of several sizes *different from the export example*; the largest
absolute difference to eager PyTorch is reported and must stay under ``--tolerance``.

``onnx-int8`` writes the int8 network the extractor runs on CPUs (``precision: int8``; ONNX Runtime
static quantisation, :func:`superpoint_ros.backends.quantize_onnx`) for other ONNX Runtime
deployments. Quantisation moves values by design, so it is checked differently: the descriptors'
5th-percentile cosine similarity to eager PyTorch must be at least ``--int8-min-cosine``.

CLI: ``superpoint-export --weights model.pt --out DIR [--formats torchscript onnx onnx-int8]``
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..backends import export_onnx, int8_weight_type, quantize_onnx
from ..weights import load_model
from .checkpoint import one_line_errors

CHECK_SIZES: Tuple[Tuple[int, int, int], ...] = ((1, 64, 64), (2, 120, 160), (1, 96, 200))
FORMATS = ("torchscript", "onnx", "onnx-int8")
#: least 5th-percentile descriptor cosine of the int8 network to eager float32, per weight type. The
#: shipped model measured 0.993 with int8 weights on a VNNI CPU and 0.963 with uint8 weights on an
#: AVX2 CPU without VNNI (its int8 weights there: 0.05, the saturating instruction).
INT8_MIN_COSINE = {"int8": 0.98, "uint8": 0.95}


class TupleOutputs(nn.Module):
    """The network with tuple outputs (what TorchScript and ONNX consumers expect)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.model(image)
        return out["logits"], out["descriptors"]


def export_torchscript(model: nn.Module, path: Path) -> Path:
    """Trace the network (conv-only, so the trace holds for every H, W) and save it."""
    wrapped = TupleOutputs(model.float().cpu().eval())
    example = torch.rand(1, 1, 64, 80)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about the input-shape checks, jit deprecation
        traced = torch.jit.trace(wrapped, example, check_trace=False)
    traced.save(str(path))
    return path


def check_inputs(sizes: Sequence[Tuple[int, int, int]] = CHECK_SIZES) -> List[torch.Tensor]:
    """Random images of several sizes plus a real photo (scikit-image's 'camera', if available)."""
    g = torch.Generator().manual_seed(0)
    inputs = [torch.rand(b, 1, h, w, generator=g) for b, h, w in sizes]
    try:
        from skimage import data  # optional (the eval/train extras): bundled photos

        photo = torch.from_numpy(data.camera()[:240, :320].astype(np.float32) / 255)[None, None]
        inputs.append(photo)
    except Exception:  # scikit-image missing: random inputs still check the export
        pass
    return inputs


def max_differences(reference, candidate) -> Dict[str, float]:
    return {name: float((r - c).abs().max()) for name, r, c in zip(("logits", "descriptors"), reference, candidate)}


def check_torchscript(model: nn.Module, path: Path, inputs: Sequence[torch.Tensor]) -> Dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still the portable format
        loaded = torch.jit.load(str(path), map_location="cpu")
    worst = {"logits": 0.0, "descriptors": 0.0}
    with torch.no_grad():
        for x in inputs:
            eager = TupleOutputs(model)(x)
            got = loaded(x)
            assert got[0].shape == eager[0].shape and got[1].shape == eager[1].shape
            worst = {k: max(worst[k], v) for k, v in max_differences(eager, got).items()}
    return worst


def check_onnx(model: nn.Module, path: Path, inputs: Sequence[torch.Tensor]) -> Dict[str, float]:
    import onnxruntime as ort  # optional (the train extra): imported on use

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = {"logits": 0.0, "descriptors": 0.0}
    with torch.no_grad():
        for x in inputs:
            eager = TupleOutputs(model)(x)
            got = [torch.from_numpy(a) for a in session.run(["logits", "descriptors"], {"image": x.numpy()})]
            assert got[0].shape == eager[0].shape and got[1].shape == eager[1].shape
            worst = {k: max(worst[k], v) for k, v in max_differences(eager, got).items()}
    return worst


def descriptor_cosine_p05(model: nn.Module, path: Path, inputs: Sequence[torch.Tensor]) -> float:
    """5th percentile, over every descriptor cell of every input, of the cosine similarity between
    the ONNX file's descriptors and eager PyTorch's (1.0 = identical directions)."""
    import onnxruntime as ort  # optional (the train extra): imported on use

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    cosines = []
    with torch.no_grad():
        for x in inputs:
            eager = TupleOutputs(model)(x)[1]
            got = torch.from_numpy(session.run(["descriptors"], {"image": x.numpy()})[0])
            cosines.append((got * eager).sum(dim=1).flatten())
    return float(torch.quantile(torch.cat(cosines), 0.05))


def export(weights: str, out_dir, formats: Sequence[str] = ("torchscript", "onnx"), opset: int = 17,
           tolerance: float = 1e-3, int8_min_cosine: Optional[float] = None,
           int8_weights: Optional[str] = None) -> Dict[str, dict]:
    """Write the requested formats next to each other and check them; returns a report per format.
    Raises RuntimeError when an export differs from eager by more than ``tolerance`` (int8: when its
    descriptors' 5th-percentile cosine to eager is below ``int8_min_cosine``, measured on this
    machine's CPU; ``None`` = :data:`INT8_MIN_COSINE` of the weight type). ``int8_weights``: ``"int8"`` for CPUs with int8 dot products (VNNI, ARM dot
    product), ``"uint8"`` for x86 CPUs without VNNI, ``None`` = what this CPU runs
    (:func:`superpoint_ros.backends.int8_weight_type`)."""
    model, provenance = load_model(weights)
    model = model.float().cpu().eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(weights).stem
    inputs = check_inputs()
    report: Dict[str, dict] = {}
    for fmt in formats:
        if fmt == "torchscript":
            path = export_torchscript(model, out / f"{stem}.torchscript.pt")
            diff = check_torchscript(model, path, inputs)
        elif fmt == "onnx":
            path = out / f"{stem}.onnx"
            path.write_bytes(export_onnx(model, opset))
            try:
                diff = check_onnx(model, path, inputs)
            except ImportError:
                diff = None  # onnxruntime not installed: written but unchecked (reported as such)
        elif fmt == "onnx-int8":
            path = out / f"{stem}.int8.onnx"
            weight_type = int8_weight_type() if int8_weights is None else int8_weights
            path.write_bytes(quantize_onnx(model, weight_type))  # needs onnxruntime: always checked
            diff = check_onnx(model, path, inputs)
            report[fmt] = {"path": str(path), "max_abs_diff": diff, "checked": True, "weight_type": weight_type,
                           "descriptor_cosine_p05": descriptor_cosine_p05(model, path, inputs),
                           "checked_shapes": [list(x.shape) for x in inputs]}
            continue
        else:
            raise ValueError(f"unknown export format {fmt!r} ({' | '.join(FORMATS)})")
        report[fmt] = {"path": str(path), "max_abs_diff": diff, "checked_shapes": [list(x.shape) for x in inputs],
                       "checked": diff is not None}
    (out / f"{stem}.export.json").write_text(json.dumps(
        {"weights": str(weights), "config": model.config.to_dict(), "provenance_date": provenance.get("date"),
         "formats": report, "tolerance": tolerance,
         "io": {"input": "image (B,1,H,W) float32 in [0,1], H and W multiples of 8",
                "outputs": ["logits (B,65,H/8,W/8)", "descriptors (B,D,H/8,W/8) L2-normalised"]}}, indent=2))
    bad = {f: r["max_abs_diff"] for f, r in report.items()
           if r["checked"] and f != "onnx-int8" and max(r["max_abs_diff"].values()) > tolerance}
    if bad:
        raise RuntimeError(f"export differs from eager PyTorch by more than {tolerance}: {bad}")
    if "onnx-int8" in report:
        r = report["onnx-int8"]
        least = INT8_MIN_COSINE[r["weight_type"]] if int8_min_cosine is None else int8_min_cosine
        if r["descriptor_cosine_p05"] < least:
            raise RuntimeError(f"int8 descriptors differ from eager PyTorch: 5th-percentile cosine "
                               f"{r['descriptor_cosine_p05']:.4f} < {least} ({r['weight_type']} weights)")
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="a superpoint_ros checkpoint or published weights")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--formats", nargs="+", default=["torchscript", "onnx"], choices=list(FORMATS))
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--tolerance", type=float, default=1e-3, help="max |export - eager| allowed")
    parser.add_argument("--int8-min-cosine", type=float, default=None,
                        help="onnx-int8: least 5th-percentile descriptor cosine to eager allowed "
                             "(default: 0.98 with int8 weights, 0.95 with uint8 weights)")
    parser.add_argument("--int8-weights", choices=("auto", "int8", "uint8"), default="auto",
                        help="onnx-int8 weight type: int8 for CPUs with VNNI / ARM dot product, uint8 for x86 "
                             "CPUs without VNNI (no 16-bit saturation); auto = what this CPU runs")
    args = parser.parse_args(argv)
    try:
        with one_line_errors("superpoint-export"):  # a bad weight file: one line, exit 2
            report = export(args.weights, args.out, args.formats, args.opset, args.tolerance, args.int8_min_cosine,
                            None if args.int8_weights == "auto" else args.int8_weights)
    except RuntimeError as e:  # an export that differs from eager: exit 1
        print(f"superpoint-export: {e}", file=sys.stderr)
        sys.exit(1)
    for fmt, r in report.items():
        diff = r["max_abs_diff"]
        check = (f"max |diff| logits {diff['logits']:.2e}, descriptors {diff['descriptors']:.2e}"
                 if r["checked"] else "NOT checked (onnxruntime not installed)")
        if "descriptor_cosine_p05" in r:
            check += f", descriptor cosine p05 {r['descriptor_cosine_p05']:.4f}"
        print(f"{fmt:<12} {r['path']}  {check}")


if __name__ == "__main__":
    main()
