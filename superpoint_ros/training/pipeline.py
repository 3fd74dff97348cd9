"""Last step of ``scripts/train_default_model.sh``: write the released checkpoint.

``python -m superpoint_ros.training.pipeline finalize --run OUT --output OUT/superpoint_ros_v1.pt``
loads the SuperPoint stage's model, records the provenance of every stage (data, iterations, wall
time, configs, date), saves it in the project checkpoint format and checks that the result loads
through the core and detects and matches points on a held-out real photo under a known warp.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from ..extractor import FeatureExtractor
from ..matching import match_descriptors
from ..weights import load_model, load_weights, save_checkpoint
from .homographies import sample_homography, warp_points


def sanity_check(path: Path) -> dict:
    """Extract + match on a real photo and a warped copy; report keypoints and correct-match ratio."""
    from skimage import data as skdata  # optional (the train extra): the held-out photo

    image = skdata.astronaut()[..., 0]  # an evaluation photo (never trained on), red channel as gray
    h = sample_homography(np.random.default_rng(7), image.shape)
    warped = cv2.warpPerspective(image, h, image.shape[::-1], flags=cv2.INTER_LINEAR)
    extractor = FeatureExtractor(weights=str(path), device="cpu")
    f0, f1 = extractor(image), extractor(warped)
    matches = match_descriptors(f0.descriptors, f1.descriptors)
    idx = np.asarray(matches.indices)
    if len(idx) == 0:
        return {"keypoints": [len(f0.keypoints), len(f1.keypoints)], "matches": 0, "correct_3px": 0.0}
    projected = warp_points(h, np.asarray(f0.keypoints)[idx[:, 0]])
    error = np.linalg.norm(projected - np.asarray(f1.keypoints)[idx[:, 1]], axis=1)
    return {"keypoints": [len(f0.keypoints), len(f1.keypoints)], "matches": int(len(idx)),
            "correct_3px": float((error <= 3).mean())}


DEFAULT_PIPELINE = ("scripts/train_default_model.sh: synthetic shapes -> MagicPoint -> homographic adaptation "
                    "-> SuperPoint")


def finalize(run: Path, output: Path, pipeline: str = DEFAULT_PIPELINE) -> dict:
    stages = {}
    for stage in ("magicpoint", "superpoint"):
        model_path = run / stage / "model.pt"
        if model_path.is_file():
            _, _, prov = load_weights(model_path)
            stages[stage] = {k: prov.get(k) for k in ("training_data", "iterations", "batch_size", "wall_time_s",
                                                      "device", "amp", "date", "config")}
    adapt_summary = run / "labels" / "adapt_summary.json"
    if adapt_summary.is_file():
        stages["adapt"] = json.loads(adapt_summary.read_text())
    eval_path = run / "magicpoint" / "eval.json"
    if eval_path.is_file():
        stages["magicpoint_eval_synthetic"] = json.loads(eval_path.read_text())
    model, prov = load_model(run / "superpoint" / "model.pt")
    provenance = {
        "name": output.stem,
        "pipeline": pipeline,
        "training_data": prov.get("training_data"),
        "training_sources": prov.get("training_sources"),
        "training_licences": prov.get("training_licences"),
        "initialised_from": prov.get("initialised_from"),
        "iterations": {k: v.get("iterations") for k, v in stages.items() if isinstance(v, dict) and "iterations" in v},
        "wall_time_s": sum(float(v.get("wall_time_s") or 0) for v in stages.values() if isinstance(v, dict)),
        "stages": stages,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    save_checkpoint(output, model, provenance)
    check = sanity_check(output)
    (output.parent / (output.stem + ".sanity.json")).write_text(json.dumps(check, indent=2))
    return {"output": str(output), "size_mb": output.stat().st_size / 2 ** 20, "sanity": check}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fin = sub.add_parser("finalize", help="write the released checkpoint from a pipeline run folder")
    fin.add_argument("--run", required=True, type=Path)
    fin.add_argument("--output", required=True, type=Path)
    fin.add_argument("--pipeline", default=DEFAULT_PIPELINE, help="how the run was made (for the provenance)")
    args = parser.parse_args(argv)
    result = finalize(args.run, args.output, args.pipeline)
    print(f"[finalize] {json.dumps(result)}")


if __name__ == "__main__":
    main()
