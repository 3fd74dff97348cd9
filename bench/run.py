"""The benchmark suite (issue 7): ``python -m bench.run [--quick] [--device cpu|cuda] [--json OUT]``.

Every section times its variants side by side, interleaved, in this one process, on real photos
resized to 240x320, 480x640 and 720x1280, and prints absolute milliseconds (device named) and the
ratio to the section's baseline:

- ``forward``: the network alone (eager float32 NCHW baseline vs channels_last, bf16/fp16,
  ONNX Runtime, CUDA graphs, torch.compile);
- ``decode``: keypoint decoding from the same network outputs (greedy numpy NMS baseline vs the
  dense max-pool NMS vs the sparse NMS the extractor uses), with keypoint agreement;
- ``extractor``: image in, Features out (the plain reference extractor vs the optimised one and
  its options), plus OpenCV ORB and SIFT on the same frames as classical anchors;
- ``stereo``: a left/right pair batched through one forward pass vs two calls;
- ``frontend``: the whole per-frame front-end as the node runs it (``Frontend.process_stereo`` with
  the shipped stereo config: extraction, matching, RANSAC, flow refinement, re-finding, stereo) on a
  moving stereo camera, vs the batched extraction alone, with the time of each stage; on a GPU the
  CPU-side stages are most of it;
- ``matching``: 1000x1000 real descriptors, mutual NN (torch) vs OpenCV BFMatcher cross-check;
- ``node``: image published -> features received over loopback DDS (bench/node_e2e.py);
- memory: peak RSS (and CUDA max allocated) per resolution, recorded in the extractor section.

Results go to stdout and, with ``--json``, to a JSON file (bench/README in docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np
import torch

from superpoint_ros import FeatureExtractor, match_descriptors
from superpoint_ros.backends import TorchRunner, configure_process, cpu_has_native_bf16
from superpoint_ros.extractor import pad_to_cell
from superpoint_ros.image import to_grayscale_float
from superpoint_ros.keypoints import detect_keypoints, logits_to_heatmap, nms, remove_border
from superpoint_ros.model import SuperPointConfig, SuperPointNet
from superpoint_ros.weights import load_model, save_checkpoint

from .cpu_side import ReplayedNetwork
from .images import RESOLUTIONS, frames_at, load_photos, stereo_pair, to_gray_u8
from .reference import ReferenceExtractor
from .node_e2e import FRONTEND_VARIANT as NODE_FRONTEND_VARIANT
from .timing import device_description, peak_rss_mb, reset_peak_rss, summary, synchronize, time_variants

ROOT = Path(__file__).resolve().parent.parent
TRAINED = ROOT / "models" / "superpoint_ros_v1.pt"
SECTIONS = ("forward", "decode", "extractor", "stereo", "frontend", "matching", "node")
#: detection threshold for random weights: their heatmap is ~1/65 everywhere, so the trained
#: default (0.005) would make every pixel a candidate; this keeps the keypoint count realistic.
RANDOM_WEIGHTS_THRESHOLD = 0.0155
#: the extractor sections time plain top-k decoding at pixel positions, as docs/benchmarks.md
#: measured them (the extractor's defaults, the node's, add the uniform grid and sub-pixel centroid)
MEASURED_DECODING = {"uniform_cell": None, "subpixel": False}


class Report:
    """Collects result rows, prints them as aligned tables, writes JSON."""

    def __init__(self, meta: dict):
        self.meta, self.rows, self.notes = meta, [], []

    def add(self, section: str, resolution: str, samples: Dict[str, List[float]], baseline: Optional[str],
            extra: Optional[Dict[str, dict]] = None) -> None:
        base = summary(samples[baseline])["ms_median"] if baseline else None
        print(f"\n[{section}] {resolution}  ({self.meta['device']})")
        print(f"  {'variant':<46} {'median ms':>10} {'p90 ms':>8} {'x base':>7}  notes")
        for name, values in samples.items():
            row = {"section": section, "resolution": resolution, "variant": name, **summary(values),
                   "baseline": baseline, **((extra or {}).get(name, {}))}
            row["ratio_to_baseline"] = row["ms_median"] / base if base else None
            self.rows.append(row)
            ratio = f"{row['ratio_to_baseline']:.2f}" if base else "-"
            notes = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in (extra or {}).get(name, {}).items())
            print(f"  {name:<46} {row['ms_median']:>10.2f} {row['ms_p90']:>8.2f} {ratio:>7}  {notes}")
        sys.stdout.flush()

    def find(self, section: str, resolution: str, variant: str) -> Optional[dict]:
        for row in self.rows:
            if (row["section"], row["resolution"], row["variant"]) == (section, resolution, variant):
                return row
        return None

    def note(self, text: str) -> None:
        print(f"note: {text}")
        self.notes.append(text)

    def to_json(self) -> dict:
        return {"meta": self.meta, "results": self.rows, "notes": self.notes}


# ----------------------------------------------------------------------------------------------
# set-up


def load_weights_for_bench(path: Optional[str]):
    """(model, weights description, detection threshold). Trained weights when available."""
    if path or TRAINED.exists():
        chosen = Path(path) if path else TRAINED
        # a private copy: every variant must run the same weights even if the file is replaced mid-run
        snapshot = Path(tempfile.mkdtemp(prefix="superpoint_bench_")) / chosen.name
        shutil.copyfile(chosen, snapshot)
        model, provenance = load_model(snapshot)
        origin = str(provenance.get("training_data", "trained"))
        threshold = RANDOM_WEIGHTS_THRESHOLD if "random" in origin.lower() else 0.005
        digest = hashlib.sha256(snapshot.read_bytes()).hexdigest()[:12]
        return model, f"{chosen.name} sha256:{digest} ({origin})", threshold, str(snapshot)
    torch.manual_seed(0)
    model = SuperPointNet(SuperPointConfig()).eval()
    weights = Path(tempfile.mkdtemp(prefix="superpoint_bench_")) / "random.pt"
    save_checkpoint(weights, model, {"training_data": "none (random init, benchmark only)"})
    return model, "RANDOM weights (models/superpoint_ros_v1.pt not found)", RANDOM_WEIGHTS_THRESHOLD, str(weights)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def keypoint_agreement(reference: np.ndarray, other: np.ndarray, tolerance: float = 1.0) -> float:
    """Fraction of reference keypoints with an ``other`` keypoint within ``tolerance`` px."""
    if len(reference) == 0:
        return 1.0 if len(other) == 0 else 0.0
    if len(other) == 0:
        return 0.0
    d = np.abs(reference[:, None, :] - other[None, :, :]).max(axis=2)
    return float((d.min(axis=1) <= tolerance).mean())


# ----------------------------------------------------------------------------------------------
# sections


def bench_forward(report, model, device, frames, resolution, args):
    batches = [torch.from_numpy(to_grayscale_float(f))[None, None].to(device) for f in frames]
    batches = [pad_to_cell(b) for b in batches]
    runners = {"eager fp32 NCHW (baseline)": TorchRunner(model, device, torch.float32, channels_last=False),
               "fp32 channels_last": TorchRunner(model, device, torch.float32, channels_last=True)}
    if device.type == "cpu":
        if cpu_has_native_bf16():
            runners["bf16 channels_last"] = TorchRunner(model, device, torch.bfloat16, channels_last=True)
        try:
            from superpoint_ros.backends import OnnxRuntimeRunner

            # the extractor's default: --threads, else torch's thread count before configure_process
            runners["onnxruntime fp32"] = OnnxRuntimeRunner(model, args.threads or None)
            runners["onnxruntime int8 (static quantisation)"] = OnnxRuntimeRunner(model, args.threads or None, int8=True)
        except Exception as e:  # noqa: BLE001 - optional backend
            report.note(f"onnxruntime forward skipped: {e}")
    else:
        runners["fp16 NCHW"] = TorchRunner(model, device, torch.float16, channels_last=False)
        runners["fp16 channels_last"] = TorchRunner(model, device, torch.float16, channels_last=True)
        runners["fp16 channels_last + CUDA graphs"] = TorchRunner(model, device, torch.float16, channels_last=True,
                                                                  cuda_graphs=True)
    if args.compile:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        runners[f"{str(dtype)[6:]} channels_last + torch.compile"] = TorchRunner(
            model, device, dtype, channels_last=True, compile=True)
    variants = {}
    for name, runner in runners.items():
        def run(i, runner=runner):
            with torch.inference_mode():
                runner(batches[i % len(batches)])
        variants[name] = run
    samples = time_variants(variants, args.repeats, args.warmup, device, args.budget)
    extra = {name: {"fallbacks": "; ".join(r.fallbacks)} for name, r in runners.items() if r.fallbacks}
    report.add("forward", resolution, samples, "eager fp32 NCHW (baseline)", extra)


def bench_decode(report, model, device, frames, resolution, threshold, args):
    reference = ReferenceExtractor(model, str(device), detection_threshold=threshold, max_keypoints=1000)
    extractor = FeatureExtractor(weights=args.weights_path, device=str(device), detection_threshold=threshold,
                                 max_keypoints=1000, precision="fp32", **MEASURED_DECODING)
    grays = [to_grayscale_float(f) for f in frames]
    outputs = [reference.forward(g) for g in grays]
    size = grays[0].shape

    def dense(out):
        heat = logits_to_heatmap(out["logits"])[:, :size[0], :size[1]]
        sup = remove_border(nms(heat, 4), 4)
        return detect_keypoints(heat[0], threshold, 1000, nms_heatmap=sup[0])

    variants = {
        "greedy NMS, numpy (baseline)": lambda i: reference.decode(outputs[i % len(outputs)], size),
        "dense max-pool NMS (3 passes)": lambda i: dense(outputs[i % len(outputs)]),
        "sparse NMS (extractor default)": lambda i: extractor.decode(outputs[i % len(outputs)], size),
    }
    with torch.inference_mode():
        samples = time_variants(variants, args.repeats, args.warmup, device, args.budget)
        agree_fast, agree_dense, counts = [], [], []
        for out in outputs:
            ref = reference.decode(out, size).keypoints
            fast = extractor.decode(out, size)[0]["keypoints"].cpu().numpy()
            agree_fast.append(keypoint_agreement(ref, fast))
            agree_dense.append(keypoint_agreement(ref, dense(out)[0].cpu().numpy()))
            counts.append(len(ref))
    extra = {"sparse NMS (extractor default)": {"agreement_with_greedy": float(np.mean(agree_fast))},
             "dense max-pool NMS (3 passes)": {"agreement_with_greedy": float(np.mean(agree_dense))},
             "greedy NMS, numpy (baseline)": {"keypoints": float(np.mean(counts))}}
    report.add("decode", resolution, samples, "greedy NMS, numpy (baseline)", extra)


SIFT_VARIANT = "OpenCV SIFT (1000 features, classical anchor)"
HALF_SCALE_VARIANT = "default + input_scale=0.5 (network at half size)"


def extractor_variants(device: torch.device, args) -> Dict[str, dict]:
    """Label -> FeatureExtractor options of the optimised variants compared in `extractor`. The
    first is the default options (label completed with what actually runs)."""
    if device.type == "cuda":
        variants = {"optimised default": {},
                    "fp16 channels_last, no CUDA graphs": {"cuda_graphs": False},
                    "fp32 NCHW, sparse NMS": {"precision": "fp32", "channels_last": False, "cuda_graphs": False}}
    else:
        variants = {"optimised default": {},
                    "torch fp32 channels_last (backend=torch)": {"backend": "torch"},
                    HALF_SCALE_VARIANT: {"input_scale": 0.5}}
        if cpu_has_native_bf16():
            variants["torch bf16 channels_last (precision=bf16)"] = {"precision": "bf16"}
        try:
            import onnxruntime  # noqa: F401

            variants["onnxruntime fp32 (backend=onnxruntime)"] = {"backend": "onnxruntime"}
            variants["onnxruntime int8 (precision=int8)"] = {"precision": "int8"}
        except ImportError:
            pass
    if args.compile:
        variants["torch.compile (compile=True)"] = {"compile": True, "backend": "torch"}
    return variants


def make_extractors(device, threshold, args) -> Dict[str, FeatureExtractor]:
    extractors = {}
    for label, options in extractor_variants(device, args).items():
        ex = FeatureExtractor(weights=args.weights_path, device=str(device), detection_threshold=threshold,
                              max_keypoints=1000, **MEASURED_DECODING, **options)
        if label == "optimised default":
            label = f"optimised default ({ex.backend_name})"
        elif not options.get("input_scale") and any(e.backend_name == ex.backend_name for e in extractors.values()):
            continue  # the same thing as the default: don't time it twice
        extractors[label] = ex
    return extractors


def bench_extractor(report, model, device, frames, resolution, threshold, args):
    reference = ReferenceExtractor(model, str(device), detection_threshold=threshold, max_keypoints=1000)
    extractors = make_extractors(device, threshold, args)
    variants = {"reference: eager fp32 NCHW + greedy NMS (baseline)": lambda i: reference(frames[i % len(frames)])}
    for name, ex in extractors.items():
        variants[name] = lambda i, ex=ex: ex(frames[i % len(frames)])
    if device.type == "cuda":  # network + decoding only: the image already on the GPU
        ex = next(iter(extractors.values()))
        tensors = [ex.to_tensor([f]) for f in frames]
        variants["optimised, network + decoding only (tensor on GPU)"] = (
            lambda i: ex.extract_tensor(tensors[i % len(tensors)]))
    orb = cv2.ORB_create(nfeatures=1000)
    sift = cv2.SIFT_create(nfeatures=1000)
    grays = [to_gray_u8(f) for f in frames]
    variants["OpenCV ORB (1000 features, classical anchor)"] = lambda i: orb.detectAndCompute(grays[i % len(grays)], None)
    variants[SIFT_VARIANT] = lambda i: sift.detectAndCompute(grays[i % len(grays)], None)

    # memory: peak while running each extractor variant at this resolution
    extra: Dict[str, dict] = {}
    for name, run in variants.items():
        reset_ok = reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        run(0)
        run(1)
        synchronize(device)
        extra[name] = {"peak_rss_mb": peak_rss_mb() if reset_ok else float("nan")}
        if device.type == "cuda":
            extra[name]["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    samples = time_variants(variants, args.repeats, args.warmup, device, args.budget)
    # quality: do the optimised variants find the reference's keypoints?
    ref_features = [reference(f) for f in frames]
    for name, ex in extractors.items():
        agreement = [keypoint_agreement(r.keypoints, ex(f).keypoints) for r, f in zip(ref_features, frames)]
        extra[name]["agreement_with_reference"] = float(np.mean(agreement))
        if ex.runner.fallbacks:
            extra[name]["fallbacks"] = "; ".join(ex.runner.fallbacks)
    extra["reference: eager fp32 NCHW + greedy NMS (baseline)"]["keypoints"] = float(
        np.mean([len(r) for r in ref_features]))
    report.add("extractor", resolution, samples, "reference: eager fp32 NCHW + greedy NMS (baseline)", extra)


def bench_stereo(report, device, photos, size, resolution, threshold, args):
    left, right = stereo_pair(photos, size)
    ex = FeatureExtractor(weights=args.weights_path, device=str(device), detection_threshold=threshold,
                          max_keypoints=1000, **MEASURED_DECODING)
    variants = {"two single-image calls (baseline)": lambda i: (ex(left), ex(right)),
                "one batched call (extract_batch)": lambda i: ex.extract_batch([left, right])}
    if device.type == "cuda":
        pair = ex.to_tensor([left, right])
        variants["batched, network + decoding only (tensor on GPU)"] = lambda i: ex.extract_tensor(pair)
    samples = time_variants(variants, args.repeats, args.warmup, device, args.budget)
    report.add("stereo", resolution, samples, "two single-image calls (baseline)")


def bench_matching(report, device, photos, threshold, args):
    """Mutual NN of 1000x1000 real SuperPoint descriptors (two different photos at 480x640)."""
    # threshold 0: the top 1000 scores of each image, so both sets have exactly 1000 descriptors
    ex = FeatureExtractor(weights=args.weights_path, device="cpu", detection_threshold=0.0, max_keypoints=1000,
                          **MEASURED_DECODING)
    frames = frames_at(photos, RESOLUTIONS["480x640"])
    d0, d1 = ex(frames[0]).descriptors, ex(frames[1]).descriptors
    if len(d0) < 1000 or len(d1) < 1000:
        report.note(f"matching: only {len(d0)}x{len(d1)} descriptors found (wanted 1000x1000)")
    d0, d1 = np.ascontiguousarray(d0[:1000]), np.ascontiguousarray(d1[:1000])
    matcher = cv2.BFMatcher(cv2.NORM_L2, crossCheck=True)
    variants = {"OpenCV BFMatcher L2 crossCheck (baseline)": lambda i: matcher.match(d0, d1),
                "match_descriptors (numpy in/out)": lambda i: match_descriptors(d0, d1),
                "match_descriptors + ratio test 0.9": lambda i: match_descriptors(d0, d1, ratio_test=0.9)}
    if device.type == "cuda":
        t0, t1 = torch.from_numpy(d0).to(device), torch.from_numpy(d1).to(device)
        variants["match_descriptors (CUDA tensors)"] = lambda i: match_descriptors(t0, t1)
    samples = time_variants(variants, args.repeats * 3, args.warmup, device, args.budget)
    ours = {(int(a), int(b)) for a, b in match_descriptors(d0, d1).indices}
    theirs = {(m.queryIdx, m.trainIdx) for m in matcher.match(d0, d1)}
    same = len(ours & theirs) / max(len(theirs), 1)
    report.add("matching", f"{len(d0)}x{len(d1)} descriptors", samples,
               "OpenCV BFMatcher L2 crossCheck (baseline)",
               {"match_descriptors (numpy in/out)": {"same_matches_as_opencv": same, "matches": len(ours)}})


# ----------------------------------------------------------------------------------------------
# targets


def summarize_targets(report: Report, device: torch.device) -> List[dict]:
    """The issue-7 (and issue-17) targets that this run measured, with the measured value and verdict."""
    targets = []

    def target(name, value, goal, met, detail=""):
        targets.append({"target": name, "value": value, "goal": goal, "met": bool(met), "detail": detail})

    if device.type == "cpu":
        # same output as the baseline (full-resolution network): input_scale variants don't count here
        rows = [r for r in report.rows if r["section"] == "extractor" and r["resolution"] == "480x640"
                and r["ratio_to_baseline"] is not None and not r["variant"].startswith(("reference", "OpenCV"))
                and "input_scale" not in r["variant"]]
        default = next((r for r in rows if r["variant"].startswith("optimised default")), None)
        if rows:
            best = min(rows, key=lambda r: r["ratio_to_baseline"])
            chosen = default or best
            target("CPU 480x640 extractor vs plain baseline (best variant)", round(best["ratio_to_baseline"], 3),
                   "<= 0.5", best["ratio_to_baseline"] <= 0.5, best["variant"])
            target("CPU 480x640 extractor vs plain baseline (default options)", round(chosen["ratio_to_baseline"], 3),
                   "<= 0.5", chosen["ratio_to_baseline"] <= 0.5, chosen["variant"])
        sift = report.find("extractor", "480x640", SIFT_VARIANT)
        half = report.find("extractor", "480x640", HALF_SCALE_VARIANT)
        if sift and default:  # issue 17: what a user choosing a CPU front-end compares
            int8 = "int8" in default["variant"]
            target("CPU 480x640 whole extractor vs OpenCV SIFT, same frames (issue 17: with int8)",
                   round(default["ms_median"] / sift["ms_median"], 3), "<= 1.0",
                   default["ms_median"] <= sift["ms_median"],
                   f"{default['variant']} {default['ms_median']:.1f} ms vs SIFT {sift['ms_median']:.1f} ms"
                   + ("" if int8 else "; this CPU runs fp32 (int8 is the default only with VNNI)"))
            if half:
                target("CPU 480x640 extractor at input_scale=0.5 vs OpenCV SIFT (quality cost: bench.quality)",
                       round(half["ms_median"] / sift["ms_median"], 3), "<= 1.0", half["ms_median"] <= sift["ms_median"],
                       f"{half['ms_median']:.1f} ms vs SIFT {sift['ms_median']:.1f} ms")
        for resolution in RESOLUTIONS:
            rows = [r for r in report.rows if r["section"] == "extractor" and r["resolution"] == resolution
                    and not r["variant"].startswith(("reference", "OpenCV"))]
            if rows:
                best = min(rows, key=lambda r: r["ms_median"])
                fps = 1000.0 / best["ms_median"]
                target(f"CPU real-time at {resolution}", round(fps, 1), ">= 20 frames/s", fps >= 20, best["variant"])
    else:
        row = report.find("extractor", "480x640", "optimised, network + decoding only (tensor on GPU)")
        if row:
            target("GPU 480x640 network + decoding", round(row["ms_median"], 3), "<= 2 ms", row["ms_median"] <= 2.0,
                   report.meta["device"])
        row = report.find("stereo", "480x640", "batched, network + decoding only (tensor on GPU)")
        if row:
            target("GPU 480x640 stereo pair network + decoding", round(row["ms_median"], 3), "<= 3 ms",
                   row["ms_median"] <= 3.0, report.meta["device"])
    rows = [r for r in report.rows if r["section"] == "matching"]
    base = next((r for r in rows if "baseline" in r["variant"]), None)
    ours = next((r for r in rows if r["variant"] == "match_descriptors (numpy in/out)"), None)
    if base and ours:
        target("matching 1000x1000 vs OpenCV BF cross-check", round(ours["ratio_to_baseline"], 3), "< 1.0",
               ours["ratio_to_baseline"] < 1.0, f"{ours['ms_median']:.2f} ms vs {base['ms_median']:.2f} ms")
    row = report.find("frontend_cpu_side", "480x640", CPU_SIDE_VARIANT)
    if row:
        target("stereo front-end at 480x640: everything but the network, per pair (issue 17)",
               round(row["ms_median"], 2), "<= 8 ms", row["ms_median"] <= 8.0,
               f"{row['stage_ms']} ({report.meta['device']})")
    node = [r for r in report.rows if r["section"] == "node" and r.get("overhead_ratio") is not None]
    for r in node:
        if r["resolution"] == "480x640":
            target("node end-to-end vs extractor at 480x640", round(r["overhead_ratio"], 3), "<= 1.15",
                   r["overhead_ratio"] <= 1.15, r["variant"])
            frontend = report.find("node", "480x640", NODE_FRONTEND_VARIANT)  # the node's own frames, in-process
            if frontend:
                ratio = r["ms_median"] / frontend["ms_median"]
                target("node end-to-end vs the in-process Frontend at 480x640 (issue 17: with int8)", round(ratio, 3),
                       "<= 1.15", ratio <= 1.15, f"{r['ms_median']:.1f} vs {frontend['ms_median']:.1f} ms, "
                       f"network {r.get('backend')}")
    print("\nTargets (issues 7 and 17):")
    for t in targets:
        print(f"  [{'MET ' if t['met'] else 'MISS'}] {t['target']}: {t['value']} (goal {t['goal']}) {t['detail']}")
    return targets


# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few repeats (a smoke run, ~1-2 min on 2 CPU cores)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--json", metavar="OUT", help="write all results to this JSON file")
    p.add_argument("--weights", help="weights to benchmark (default: models/superpoint_ros_v1.pt, "
                                     "else random weights with a note)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--resolutions", default=",".join(RESOLUTIONS), help="comma-separated subset of "
                                                                         f"{','.join(RESOLUTIONS)}")
    p.add_argument("--threads", type=int, help="torch CPU threads and ONNX Runtime's (default: torch 1 as in the node, ONNX Runtime torch's default count)")
    p.add_argument("--repeats", type=int, help="timed calls per variant (default 15, --quick 4)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile variants (slow to build)")
    p.add_argument("--budget", type=float, help="max seconds of timing per table (default: none, --quick 20)")
    return p


def moving_stereo(photos, size, steps: int = 24, disparity_px: int = 8) -> List[tuple]:
    """``(left, right)`` BGR pairs of a rectified stereo camera panning over a real photo: the right
    image is the left one's view ``disparity_px`` further right (content shifted left)."""
    from .node_e2e import moving_camera

    h, w = size
    wide = moving_camera(photos, (h, w + 2 * disparity_px), steps=steps)
    return [(np.ascontiguousarray(f[:, disparity_px:disparity_px + w]),
             np.ascontiguousarray(f[:, 2 * disparity_px:2 * disparity_px + w])) for f in wide]


def bench_frontend(report, device, photos, size, resolution, threshold, args):
    from superpoint_ros.frontend import Frontend
    from superpoint_ros.params import load_params

    pairs = moving_stereo(photos, size)
    conf = load_params(ROOT / "config" / "superpoint_stereo.yaml", overrides={
        "extractor.weights": args.weights_path or "", "extractor.device": str(device),
        "extractor.detection_threshold": threshold, "stereo.max_disparity": 64.0})
    shipped = Frontend(conf)
    plain = Frontend({**conf, "tracking.flow_refinement": False, "tracking.max_age": 0}, extractor=shipped.extractor)
    stages: Dict[str, List[float]] = {}

    def run_frontend(frontend, record):
        calls = [0]

        def run(i):
            calls[0] += 1  # stamps always move forward (the warm-up calls reuse the indices)
            left, right = pairs[calls[0] % len(pairs)]
            result = frontend.process_stereo(left, right, calls[0] * 100_000_000, "bench_stereo")  # 10 Hz, ns
            if record:
                for stage, ms in result.timings.items():
                    stages.setdefault(stage, []).append(ms)
        return run

    baseline = "batched extraction only (network + decoding)"
    variants = {baseline: lambda i: shipped.extractor.extract_batch(list(pairs[i % len(pairs)])),
                "Frontend.process_stereo, shipped stereo config": run_frontend(shipped, True),
                "Frontend.process_stereo, no flow refinement, max_age 0": run_frontend(plain, False)}
    samples = time_variants(variants, args.repeats, args.warmup, device, args.budget)
    split = ", ".join(f"{stage} {np.median(ms):.1f}" for stage, ms in stages.items() if stage != "total")
    report.add("frontend", resolution, samples, baseline,
               {"Frontend.process_stereo, shipped stereo config": {"stage_ms": split,
                                                                   "network": shipped.extractor.backend_name}})
    bench_frontend_cpu_side(report, device, pairs, conf, shipped, resolution, args)


#: issue 17's CPU-side row: the shipped stereo front-end with the network's output replayed
CPU_SIDE_VARIANT = "shipped stereo config, network replayed"


def bench_frontend_cpu_side(report, device, pairs, conf, shipped, resolution, args):
    """Issue 17's target: everything the Frontend does per stereo pair but the network and its
    decoding (:class:`~bench.cpu_side.ReplayedNetwork`), timed as wall time per pair, shipped config
    vs flow refinement and re-finding off; cheap, so many more repeats than the network tables."""
    from superpoint_ros.frontend import Frontend

    replay = ReplayedNetwork(shipped.extractor, pairs, shipped.conf.detector)
    frontends = {CPU_SIDE_VARIANT: Frontend(conf, extractor=replay),
                 "no flow refinement, max_age 0, network replayed": Frontend(
                     {**conf, "tracking.flow_refinement": False, "tracking.max_age": 0}, extractor=replay)}
    stages: Dict[str, List[float]] = {}
    calls = [0]

    def run_frontend(frontend, record):
        def run(i):
            calls[0] += 1  # stamps always move forward
            left, right = pairs[i % len(pairs)]
            result = frontend.process_stereo(left, right, calls[0] * 100_000_000, "bench_stereo")  # 10 Hz, ns
            if record:
                for stage, ms in result.timings.items():
                    stages.setdefault(stage, []).append(ms)
        return run

    variants = {name: run_frontend(f, name == CPU_SIDE_VARIANT) for name, f in frontends.items()}
    samples = time_variants(variants, max(4 * len(pairs), args.repeats), len(pairs), device)
    split = ", ".join(f"{stage} {np.median(ms):.1f}" for stage, ms in stages.items() if stage != "total")
    report.add("frontend_cpu_side", resolution, samples, None, {CPU_SIDE_VARIANT: {"stage_ms": split}})


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    configure_process(num_threads=args.threads or None)
    args.repeats = args.repeats or (4 if args.quick else 15)
    args.warmup = 1 if args.quick else 2
    args.budget = args.budget or (20.0 if args.quick else None)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    resolutions = [r.strip() for r in args.resolutions.split(",") if r.strip()]
    unknown |= set(resolutions) - set(RESOLUTIONS)
    if unknown:
        print(f"error: unknown sections/resolutions {sorted(unknown)}", file=sys.stderr)
        return 2
    model, weights_note, threshold, args.weights_path = load_weights_for_bench(args.weights)
    report = Report({
        "device": device_description(device), "device_type": device.type, "torch": torch.__version__,
        "opencv": cv2.__version__, "weights": weights_note, "detection_threshold": threshold,
        "max_keypoints": 1000, "quick": args.quick, "repeats": args.repeats, "git_commit": git_commit(),
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_native_bf16": cpu_has_native_bf16(), "sections": sections, "resolutions": resolutions,
        # other processes on the machine skew absolute times (ratios less: variants are interleaved)
        "load_average_at_start": list(os.getloadavg()),
    })
    print(f"superpoint_ros benchmark on {report.meta['device']}; torch {torch.__version__}; "
          f"weights: {weights_note}; detection_threshold {threshold}; max_keypoints 1000")
    if "RANDOM" in weights_note:
        report.note("random weights: keypoint counts and decode times differ from a trained model")
    photos = load_photos()
    started = time.perf_counter()

    def section(name, resolution, run, *section_args):
        """Run one table; a failure is recorded and the suite goes on (one GPU run must yield JSON)."""
        try:
            run(*section_args)
        except Exception as e:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            report.note(f"{name} {resolution} failed: {type(e).__name__}: {e}")
        if args.json:  # partial results survive a later crash or timeout
            write_json(args.json, {**report.to_json(), "partial": True})

    for resolution in resolutions:
        size = RESOLUTIONS[resolution]
        frames = frames_at(photos, size)
        if "forward" in sections:
            section("forward", resolution, bench_forward, report, model, device, frames, resolution, args)
        if "decode" in sections:
            section("decode", resolution, bench_decode, report, model, device, frames, resolution, threshold, args)
        if "extractor" in sections:
            section("extractor", resolution, bench_extractor, report, model, device, frames, resolution, threshold, args)
        if "stereo" in sections:
            section("stereo", resolution, bench_stereo, report, device, photos, size, resolution, threshold, args)
        if "frontend" in sections:
            section("frontend", resolution, bench_frontend, report, device, photos, size, resolution, threshold, args)
    if "matching" in sections:
        section("matching", "", bench_matching, report, device, photos, threshold, args)
    if "node" in sections:
        from .node_e2e import bench_node

        section("node", "", bench_node, report, device, photos, resolutions, threshold, args)
    report.meta["elapsed_s"] = round(time.perf_counter() - started, 1)
    report.meta["load_average_at_end"] = list(os.getloadavg())
    result = report.to_json()
    result["targets"] = summarize_targets(report, device)
    if args.json:
        write_json(args.json, result)
        print(f"\nwrote {args.json}")
    return 0


def write_json(path: str, data: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=1, default=float) + "\n")


if __name__ == "__main__":
    sys.exit(main())
