"""One configuration: the code defaults are the shipped node, settings are per Frontend, not shared.

The equality tests run the shipped model at fp32 (pinned: ``precision="auto"`` would run int8 on
CPUs with VNNI) on real photos (scikit-image) moved by a small synthetic motion.
"""
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from superpoint_ros.config import DetectorConf, FrontendConf
from superpoint_ros.extractor import FeatureExtractor, FeatureSource
from superpoint_ros.evaluation.baselines import OpenCVFrontendExtractor
from superpoint_ros.frontend import Frontend
from superpoint_ros.params import frontend_conf, load_params

skimage_data = pytest.importorskip("skimage.data")

ROOT = Path(__file__).resolve().parents[1]
FP32_CPU = {"extractor.precision": "fp32", "extractor.device": "cpu"}
SIZE = (240, 320)  # (height, width) of the test frames


def moving(image: np.ndarray, frames: int, step_px=(1.7, 0.6), rotation_deg: float = 0.4) -> list:
    """``frames`` views of ``image`` (uint8 gray) under a slow sub-pixel translation and rotation,
    each ``SIZE`` px, the first unmoved."""
    h, w = image.shape[:2]
    views = []
    for k in range(frames):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), rotation_deg * k, 1.0)
        m[:, 2] += (step_px[0] * k, step_px[1] * k)
        warped = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        views.append(cv2.resize(warped, SIZE[::-1], interpolation=cv2.INTER_AREA))
    return views


def assert_same_results(a, b):
    """Two FrameResults: identical keypoints, track IDs and temporal / stereo matches."""
    np.testing.assert_array_equal(a.features.keypoints, b.features.keypoints)
    np.testing.assert_array_equal(a.features.descriptors, b.features.descriptors)
    np.testing.assert_array_equal(a.track_ids, b.track_ids)
    np.testing.assert_array_equal(a.track_lengths, b.track_lengths)
    assert (a.temporal is None) == (b.temporal is None)
    if a.temporal is not None:
        np.testing.assert_array_equal(a.temporal.indices, b.temporal.indices)
        np.testing.assert_array_equal(a.temporal.inliers, b.temporal.inliers)
    assert (a.stereo is None) == (b.stereo is None)
    if a.stereo is not None:
        np.testing.assert_array_equal(a.stereo.indices, b.stereo.indices)
        np.testing.assert_array_equal(a.stereo.disparities, b.stereo.disparities)
        np.testing.assert_array_equal(a.right_features.keypoints, b.right_features.keypoints)


def test_the_code_defaults_are_the_shipped_files():
    assert frontend_conf({}) == FrontendConf()
    for name in ("superpoint_mono.yaml", "superpoint_stereo.yaml"):  # stereo.enabled is the node's only
        assert frontend_conf(load_params(ROOT / "config" / name)) == FrontendConf()


def test_default_frontend_tracks_exactly_as_the_shipped_mono_file():
    photo = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2GRAY)
    default, shipped = Frontend(FP32_CPU), Frontend(load_params(ROOT / "config" / "superpoint_mono.yaml",
                                                               overrides=FP32_CPU))
    results = []
    for k, frame in enumerate(moving(photo, 5)):
        results.append((default.process_mono(frame, k * 100_000_000, "cam"), shipped.process_mono(frame, k * 100_000_000, "cam")))
        assert_same_results(*results[-1])
    ours = [r for r, _ in results]
    assert all(len(r.features) > 100 for r in ours)  # measured 154..173
    # the shipped settings really ran: matches, refined and verified, and tracks over all frames
    assert all(r.temporal.verified and r.temporal.inliers.sum() > 80 for r in ours[1:])  # measured 123..146
    assert (ours[-1].track_lengths == 5).sum() > 50
    assert "flow_refinement" in ours[-1].timings


def test_default_frontend_matches_stereo_exactly_as_the_shipped_stereo_file():
    left, right, _ = skimage_data.stereo_motorcycle()  # a rectified pair
    left, right = (cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) for img in (left, right))
    default, shipped = Frontend(FP32_CPU), Frontend(load_params(ROOT / "config" / "superpoint_stereo.yaml",
                                                               overrides=FP32_CPU))
    # the rig moves: the same translation of both images keeps the pair rectified
    step = dict(step_px=(2.3, 0.0), rotation_deg=0.0)
    for k, (l, r) in enumerate(zip(moving(left, 3, **step), moving(right, 3, **step))):
        a, b = default.process_stereo(l, r, k * 100_000_000, "cam"), shipped.process_stereo(l, r, k * 100_000_000, "cam")
        assert_same_results(a, b)
        assert len(a.stereo) > 100


def test_default_extractor_is_the_nodes():
    """``FeatureExtractor()`` is configured and decodes as the extractor the node builds."""
    node = Frontend(load_params(ROOT / "config" / "superpoint_mono.yaml", overrides=FP32_CPU))
    alone = FeatureExtractor(device="cpu", precision="fp32")
    assert alone.settings == node.extractor.settings
    image = cv2.cvtColor(skimage_data.coffee(), cv2.COLOR_RGB2GRAY)
    features = alone(image)
    first = node.process_mono(image, 0, "cam").features  # the first frame: nothing refined yet
    np.testing.assert_array_equal(features.keypoints, first.keypoints)
    np.testing.assert_array_equal(features.descriptors, first.descriptors)
    assert not np.allclose(features.keypoints, np.round(features.keypoints))  # the shipped sub-pixel option


def test_frontends_sharing_an_extractor_keep_their_own_thresholds(random_weights, camera_image):
    extractor = FeatureExtractor(weights=random_weights, device="cpu", precision="fp32")
    before = dict(extractor.conf)
    loose = {"extractor.detection_threshold": 0.0, "extractor.uniform_cell": 0}
    many = Frontend({**loose, "extractor.max_keypoints": 100}, extractor=extractor)
    few = Frontend({**loose, "extractor.max_keypoints": 20}, extractor=extractor)
    for k in range(2):  # interleaved, as two cameras of one robot would run
        assert len(many.process_mono(camera_image, k * 10**9, "a").features) == 100
        assert len(few.process_mono(camera_image, k * 10**9, "b").features) == 20
    few.update({"extractor.max_keypoints": 30})
    assert len(many.process_mono(camera_image, 2 * 10**9, "a").features) == 100
    assert len(few.process_mono(camera_image, 2 * 10**9, "b").features) == 30
    typed = Frontend(replace(FrontendConf(), detector=DetectorConf(max_keypoints=40, detection_threshold=0.0,
                                                                   uniform_cell=None)), extractor=extractor)
    assert typed.params["extractor.max_keypoints"] == 40 and typed.params["extractor.uniform_cell"] == 0
    assert len(typed.process_mono(camera_image, 0, "c").features) == 40
    assert dict(extractor.conf) == before
    with pytest.raises(TypeError):
        extractor.conf["max_keypoints"] = 5  # read-only: nobody writes into a shared extractor


def test_feature_sources_take_the_detector_settings_per_call(camera_image):
    orb = OpenCVFrontendExtractor("orb", max_keypoints=500)
    assert isinstance(orb.weights_path, str) and orb.device.type == "cpu"
    prepared = orb.prepare([camera_image])
    (few,) = orb.extract_prepared(prepared, DetectorConf(max_keypoints=50))
    (more,) = orb.extract_prepared(prepared, DetectorConf(max_keypoints=200))
    assert len(few) == 50 and len(more) == 200
    np.testing.assert_array_equal(more.keypoints[:50], few.keypoints)  # best first
    assert not hasattr(orb, "conf")
    frontend = Frontend({"extractor.max_keypoints": 80}, extractor=orb)
    source: FeatureSource = frontend.extractor  # what the Frontend holds: the protocol, nothing more
    assert len(frontend.process_mono(camera_image, 0, "cam").features) == 80 and source is orb


def test_evaluate_bag_without_params_runs_the_shipped_file(tmp_path):
    """``superpoint-eval-bag`` without ``--params`` is the shipped stereo file (runs compared with
    each other on this machine, so the CPU's precision choice cancels out)."""
    from superpoint_ros.evaluation import bag_eval
    from superpoint_ros.evaluation.sample_data import TOPICS, SampleConf, ensure_sample_bag

    sample = ensure_sample_bag(tmp_path, SampleConf(size=(96, 128), num_frames=5))

    def run(params):
        summary, stats, _ = bag_eval.evaluate_bag(sample.bag, TOPICS["left_image"], TOPICS["right_image"], params,
                                                  sample.groundtruth, show_progress=False)
        return summary, [{k: v for k, v in row.items() if not k.endswith("_ms")} for row in stats.frames]

    default_summary, default_rows = run(None)
    shipped_params = load_params(bag_eval.default_params_file(stereo=True))
    shipped_summary, shipped_rows = run(shipped_params)
    assert default_rows == shipped_rows and len(default_rows) == 5
    assert sum(row["stereo_matches"] for row in default_rows) > 0
    differ = {k for k in shipped_params if default_summary["parameters"][k] != shipped_summary["parameters"][k]}
    assert differ == {"stereo.enabled"}  # the node's subscription mode, not a front-end setting
