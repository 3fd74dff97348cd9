"""The front-end's CPU side (issue 17): everything but the network and its decoding, per frame.

    python -m bench.cpu_side [--rounds 3] [--frames 96] [--flow back_pyramid_levels=0] [--json OUT]
    PYTHONPATH=<another checkout> python bench/cpu_side.py      # the same on that checkout's code

The extractor's output (network + keypoint decoding) for the bench's moving cameras (480x640, real
photo) is computed once and replayed (:class:`ReplayedNetwork`), so a Frontend does all its own
work (image preparation, flow images, matching, RANSAC, flow refinement, tracks, stereo) but no
forward pass and no decoding: what remains next to a GPU's ~2 ms network + decoding. Matching runs
on the CPU here (on a GPU robot it runs where the extractor does). Four front-ends (mono / stereo, shipped config / flow refinement and
re-finding off) are timed round-robin, frame by frame, in one process; medians in ms per frame, and
each stage's median. ``--flow FIELD=VALUE`` adds the two shipped front-ends with that Lucas-Kanade
setting (``FlowConf``, in both ``tracking.flow`` and ``tracking.refound_flow``) to the round-robin.
Only public APIs are used, so the script runs against older checkouts too (without ``--flow``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np


class ReplayedNetwork:
    """A :class:`~superpoint_ros.extractor.FeatureSource` that replays an extractor's output for
    known images: a Frontend built on it does all its own work but no forward pass and no keypoint
    decoding (``extract_prepared`` returns the stored Features). ``frames``:
    tuples of images (one, or a stereo pair), each replayed when the same array objects come back
    to :meth:`prepare`; ``detector``: the decoding settings to extract them with."""

    def __init__(self, extractor, frames, detector=None):
        self.extractor = extractor
        self._features = {tuple(map(id, f)): extractor.extract_batch(list(f), detector) for f in frames}
        self._frames = list(frames)  # keeps the arrays (and so their ids) alive
        self._next = None

    def __getattr__(self, name):  # device, weights_path, backend_name, ...: the extractor's
        return getattr(self.extractor, name)

    def prepare(self, images, image=None):
        """The extractor's :meth:`prepare` (really run); remembers which frame comes next."""
        self._next = self._features[tuple(map(id, images))]
        return self.extractor.prepare(images, image)

    def extract_prepared(self, prepared, detector=None):
        """The stored Features of the frame :meth:`prepare` was given last."""
        return self._next


#: flow refinement and re-finding off: the cheapest front-end (pixel-level matches only)
PLAIN = {"tracking.flow_refinement": False, "tracking.max_age": 0}


def build_frontends(photos, size=(480, 640), flow: Optional[dict] = None) -> Dict[str, tuple]:
    """Name -> (Frontend on replayed network output, its frames, stereo?); ``flow``: FlowConf
    fields of an extra shipped front-end per camera."""
    from bench.node_e2e import moving_camera
    from bench.run import moving_stereo
    from superpoint_ros.frontend import Frontend
    from superpoint_ros.params import load_params

    root = Path(__file__).resolve().parent.parent
    cameras = {"mono": [(f,) for f in moving_camera(photos, size)], "stereo": moving_stereo(photos, size)}
    out = {}
    for mode, frames in cameras.items():
        conf = load_params(root / "config" / f"superpoint_{mode}.yaml", overrides={
            "extractor.detection_threshold": 0.005, "extractor.max_keypoints": 1000,
            **({"stereo.max_disparity": 64.0} if mode == "stereo" else {})})
        shipped = Frontend(conf)
        replay = ReplayedNetwork(shipped.extractor, frames, shipped.conf.detector)
        out[f"{mode}, shipped config"] = (Frontend(conf, extractor=replay), frames, mode == "stereo")
        out[f"{mode}, flow refinement and re-finding off"] = (Frontend({**conf, **PLAIN}, extractor=replay), frames,
                                                              mode == "stereo")
        if flow:
            from bench.flow_settings import with_flow

            name = f"{mode}, shipped + " + ", ".join(f"{k}={v}" for k, v in flow.items())
            out[name] = (Frontend(with_flow(shipped.conf, flow), extractor=replay), frames, mode == "stereo")
    return out


def time_frontends(frontends: Dict[str, tuple], frames: int) -> Dict[str, dict]:
    """Round-robin over the front-ends, one frame each; the first pass over the frames is warm-up."""
    walls: Dict[str, List[float]] = {name: [] for name in frontends}
    stages: Dict[str, Dict[str, List[float]]] = {name: {} for name in frontends}
    warmup = max(len(f[1]) for f in frontends.values())
    for k in range(warmup + frames):
        for name, (frontend, images, stereo) in frontends.items():
            image = images[k % len(images)]
            stamp_ns = (k + 1) * 100_000_000  # 10 Hz
            t0 = time.perf_counter()
            result = (frontend.process_stereo(image[0], image[1], stamp_ns, "bench") if stereo
                      else frontend.process_mono(image[0], stamp_ns, "bench"))
            if k >= warmup:
                walls[name].append((time.perf_counter() - t0) * 1e3)
                for stage, ms in result.timings.items():
                    stages[name].setdefault(stage, []).append(ms)
    return {name: {"ms_median": float(np.median(walls[name])), "ms_p10": float(np.percentile(walls[name], 10)),
                   "stages_ms": {s: float(np.median(v)) for s, v in stages[name].items() if s != "total"}}
            for name in frontends}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cpu_side", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (each: every front-end, --frames frames)")
    p.add_argument("--frames", type=int, default=96, help="timed frames per front-end and round")
    p.add_argument("--flow", action="append", default=[], metavar="FIELD=VALUE",
                   help="also time the shipped front-ends with this FlowConf field (int), e.g. back_pyramid_levels=0")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    flow = {}
    for item in args.flow:
        field, _, value = item.partition("=")
        if not field or not value.lstrip("-").isdigit():
            p.error(f"--flow wants FIELD=INT, got {item!r}")
        flow[field] = int(value)
    from bench.images import load_photos
    from superpoint_ros.backends import configure_process

    configure_process()
    frontends = build_frontends(load_photos(), flow=flow)
    rounds = [time_frontends(frontends, args.frames) for _ in range(args.rounds)]
    print("ms per frame at 480x640, network output replayed (median of the round medians; fastest round)")
    result = {}
    for name in frontends:
        medians = [r[name]["ms_median"] for r in rounds]
        stages = {s: float(np.median([r[name]["stages_ms"].get(s, np.nan) for r in rounds]))
                  for s in rounds[0][name]["stages_ms"]}
        result[name] = {"ms_median": float(np.median(medians)), "ms_fastest_round": float(min(medians)),
                        "stages_ms": stages}
        split = ", ".join(f"{s} {v:.1f}" for s, v in stages.items())
        print(f"  {name:<44} {np.median(medians):7.2f} ({min(medians):.2f})  {split}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    # run as a file: PYTHONPATH's checkout first, this one only as the fall-back
    sys.path.append(str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
