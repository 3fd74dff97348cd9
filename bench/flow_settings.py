"""Accuracy of cheaper Lucas-Kanade settings on the sample bag (issue 17): is there a faster flow
refinement with the shipped accuracy?

    python -m bench.flow_settings [--frames 40] [--json OUT]

Each setting (window, pyramid levels of ``tracking.flow`` and ``tracking.refound_flow``) runs the
shipped front-end (``FrontendConf`` with the setting replaced) through ``superpoint-eval-bag``'s
evaluation on two sample bags: the rectified one (mono config) and one with auto-exposure (stereo
config). fp32 network, its output cached by image content so every setting sees the same features.
Printed per bag: rotation error median (deg), GT epipolar error median (px), share of long tracks
ending > 2 px off their point, and the CPU-side ms per frame (noisy: timed during the evaluation).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict

import numpy as np

#: name -> FlowConf fields changed in both tracking.flow and tracking.refound_flow
SETTINGS: Dict[str, dict] = {
    "shipped (window 15, 3 levels)": {},
    "window 11": {"window": 11},
    "window 9": {"window": 9},
    "2 levels": {"pyramid_levels": 1},
    "1 level": {"pyramid_levels": 0},
    "1 level for the way back only": {"back_pyramid_levels": 0},
}


class CachedExtractor:
    """A FeatureSource running ``extractor`` once per distinct prepared input (by content)."""

    def __init__(self, extractor):
        self.extractor = extractor
        self._cache: dict = {}

    def __getattr__(self, name):
        return getattr(self.extractor, name)

    def prepare(self, images, image=None):
        """The extractor's own preparation."""
        return self.extractor.prepare(images, image)

    def extract_prepared(self, prepared, detector=None):
        """The extractor's Features for ``prepared``, computed the first time these pixels come."""
        key = hashlib.sha1(b"".join(np.ascontiguousarray(g).tobytes() for g in prepared.grays)).hexdigest()
        if key not in self._cache:
            self._cache[key] = self.extractor.extract_prepared(prepared, detector)
        return self._cache[key]


def with_flow(conf, fields: dict):
    """``conf`` (FrontendConf) with ``fields`` replaced in both flow settings."""
    tracking = conf.tracking
    return replace(conf, tracking=replace(tracking, flow=replace(tracking.flow, **fields),
                                          refound_flow=replace(tracking.refound_flow, **fields)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.flow_settings", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=40, help="frames per bag")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    import tempfile

    from superpoint_ros.backends import configure_process
    from superpoint_ros.evaluation.bag_eval import evaluate_bag
    from superpoint_ros.evaluation.sample_data import SampleConf, ensure_sample_bag
    from superpoint_ros.frontend import Frontend
    from superpoint_ros.params import frontend_conf, load_params

    configure_process()
    root = Path(__file__).resolve().parent.parent
    cache = Path(tempfile.gettempdir()) / "superpoint_bench_bags"
    bags = {"rectified, mono": (ensure_sample_bag(cache, SampleConf()), "mono"),
            "auto-exposure, stereo": (ensure_sample_bag(cache, SampleConf(exposure_jitter=0.15)), "stereo")}
    extractor = None
    results: Dict[str, dict] = {}
    for name, fields in SETTINGS.items():
        results[name] = {}
        for bag_name, (sample, mode) in bags.items():
            params = load_params(root / "config" / f"superpoint_{mode}.yaml", overrides={"extractor.precision": "fp32"})
            conf = with_flow(frontend_conf(params), fields)
            frontend = Frontend(conf, extractor=extractor)
            extractor = extractor or CachedExtractor(frontend.extractor)
            frontend = Frontend(conf, extractor=extractor)
            right = sample.topics["right_image"] if mode == "stereo" else None
            summary, _, _ = evaluate_bag(sample.bag, sample.topics["left_image"], right, frontend=frontend,
                                         groundtruth=sample.groundtruth, max_frames=args.frames, show_progress=False)
            pose = summary["pose"]
            results[name][bag_name] = {
                "rotation_error_deg": pose["rotation_error_deg"]["median"],
                "gt_epipolar_error_px": pose["gt_epipolar_error_px"]["median"],
                "long_tracks_off_2px": pose["track_span_epipolar_error_px"]["above_2px"]}
            row = results[name][bag_name]
            print(f"{name:<32} {bag_name:<22} rotation {row['rotation_error_deg']:.4f} deg  GT epipolar "
                  f"{row['gt_epipolar_error_px']:.4f} px  long tracks > 2 px {100 * row['long_tracks_off_2px']:.1f} %",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
