"""The fast paths (issue 7) give the same answers as the plain ones."""
import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from superpoint_ros import FeatureExtractor
from superpoint_ros.backends import NetworkRunner, TorchRunner, cpu_has_native_bf16, resolve_precision
from superpoint_ros.keypoints import (decode_keypoints, detect_keypoints, logits_to_heatmap, max_pool_square, nms,
                                      nms_points, remove_border)


def peaky_heatmap(seed, h=48, w=64, quantise=False):
    """Sparse peaks on a low floor, like a trained detector's output; ``quantise`` makes ties."""
    g = torch.Generator().manual_seed(seed)
    heat = torch.rand(h, w, generator=g) * 0.004
    peaks = torch.rand(h, w, generator=g) < 0.08
    heat[peaks] = torch.rand(int(peaks.sum()), generator=g) * 0.5 + 0.01
    if quantise:
        heat = torch.round(heat * 40) / 40
    return heat


@pytest.mark.parametrize("radius", [1, 2, 4, 6])
def test_separable_max_pool_is_the_square_max_pool(radius):
    x = torch.rand(2, 37, 53)
    square = F.max_pool2d(x[:, None], 2 * radius + 1, stride=1, padding=radius)[:, 0]
    assert torch.equal(max_pool_square(x, radius), square)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("radius, threshold", [(4, 0.005), (2, 0.01), (3, 0.0), (4, 0.2)])
def test_sparse_nms_equals_dense_nms(seed, radius, threshold):
    heat = peaky_heatmap(seed, quantise=seed % 2 == 1)   # odd seeds: many exact ties
    dense = nms(heat[None], radius)[0] > threshold
    ys, xs = nms_points(heat, radius, threshold)
    sparse = torch.zeros_like(dense)
    sparse[ys, xs] = True
    assert dense.sum() > 0
    assert torch.equal(sparse, dense)
    # the dense fallback (forced) agrees too
    ys2, xs2 = nms_points(heat, radius, threshold, max_dense_fraction=0.0)
    assert torch.equal(ys, ys2) and torch.equal(xs, xs2)


def test_decode_equals_the_plain_pipeline():
    heat = peaky_heatmap(7, 64, 80)
    plain = detect_keypoints(heat, 0.005, 50, nms_heatmap=remove_border(nms(heat[None], 4), 4)[0])
    fast = decode_keypoints(heat, 4, 0.005, 4, 50)
    assert torch.equal(plain[0], fast[0]) and torch.equal(plain[1], fast[1])
    # uniform selection and sub-pixel refinement go through the same selection code
    plain = detect_keypoints(heat, 0.005, None, uniform_cell=16, max_per_cell=2, subpixel=True,
                             nms_heatmap=remove_border(nms(heat[None], 2), 3)[0])
    fast = decode_keypoints(heat, 2, 0.005, 3, None, uniform_cell=16, max_per_cell=2, subpixel=True)
    assert torch.equal(plain[0], fast[0]) and torch.equal(plain[1], fast[1])


def test_sparse_nms_rejects_batched_input():
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        nms_points(torch.zeros(1, 8, 8), 2, 0.1)


def same_points(fa, fb, fraction=0.98):
    """Keypoint sets agree up to near-ties of the random network reordered by last-bit rounding."""
    a = {tuple(p) for p in fa.keypoints.round(3).tolist()}
    b = {tuple(p) for p in fb.keypoints.round(3).tolist()}
    return len(a & b) >= fraction * max(len(a), len(b))


def outputs_of(extractor, image):
    batch = extractor.to_tensor([image])
    out = extractor.forward(batch)
    return {k: v.float() for k, v in out.items()}


@pytest.fixture(scope="module")
def plain(random_weights):
    return FeatureExtractor(weights=random_weights, device="cpu", backend="torch", channels_last=False,
                            precision="fp32", max_keypoints=300, detection_threshold=0.0155)


def test_channels_last_matches_nchw(random_weights, plain, camera_image):
    image = camera_image[:240, :320]
    fast = FeatureExtractor(weights=random_weights, device="cpu", backend="torch", channels_last=True,
                            max_keypoints=300, detection_threshold=0.0155)
    assert "channels_last" in fast.backend_name and "nchw" in plain.backend_name
    a, b = outputs_of(plain, image), outputs_of(fast, image)
    assert torch.allclose(a["logits"], b["logits"], atol=1e-4)
    assert torch.allclose(a["descriptors"], b["descriptors"], atol=1e-5)
    fa, fb = plain(image), fast(image)
    assert len(fa) == 300 and same_points(fa, fb)


def test_onnxruntime_backend_matches_eager(random_weights, plain, camera_image):
    pytest.importorskip("onnxruntime")
    ort = FeatureExtractor(weights=random_weights, device="cpu", backend="onnxruntime", max_keypoints=300,
                           detection_threshold=0.0155)
    assert ort.backend_name.startswith("onnxruntime") and not ort.runner.fallbacks
    image = camera_image[8:248, 16:336]   # a different size than the export example: dynamic axes
    a, b = outputs_of(plain, image), outputs_of(ort, image)
    assert a["logits"].shape == b["logits"].shape == (1, 65, 30, 40)
    assert torch.allclose(a["logits"], b["logits"], atol=1e-4)
    assert torch.allclose(a["descriptors"], b["descriptors"], atol=1e-5)
    fa, fb = plain(image), ort(image)
    assert len(fa) == 300 and same_points(fa, fb)
    assert np.allclose(fa.scores, fb.scores, atol=1e-5)
    # odd sizes and batches go through the same padding
    odd = [camera_image[:101, :203], camera_image[50:151, 60:263]]
    for fa, fb in zip(plain.extract_batch(odd), ort.extract_batch(odd)):
        assert len(fa) > 50 and same_points(fa, fb)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_every_runner_is_a_network_runner_whose_model_is_what_runs(random_weights, camera_image, backend):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    extractor = FeatureExtractor(weights=random_weights, device="cpu", backend=backend, precision="fp32")
    runner = extractor.runner
    assert isinstance(runner, NetworkRunner) and extractor.model is runner.model
    assert runner.name == extractor.backend_name and runner.device == torch.device("cpu")
    shapes = []
    hook = extractor.model.register_forward_hook(lambda module, inputs, output: shapes.append(inputs[0].shape))
    try:
        out = runner(torch.zeros(2, 1, 64, 96))
    finally:
        hook.remove()
    assert shapes == [(2, 1, 64, 96)]
    assert out["logits"].shape == (2, 65, 8, 12) and out["descriptors"].shape == (2, extractor.descriptor_dim, 8, 12)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="CPU without native bf16")
def test_bf16_on_cpu_keeps_most_keypoints(random_weights, plain, astronaut_bgr):
    bf16 = FeatureExtractor(weights=random_weights, device="cpu", precision="bf16", max_keypoints=300,
                            detection_threshold=0.0155)
    assert bf16.dtype == torch.bfloat16
    fa, fb = plain(astronaut_bgr), bf16(astronaut_bgr)
    a = {tuple(p) for p in fa.keypoints.astype(int).tolist()}
    b = {tuple(p) for p in fb.keypoints.astype(int).tolist()}
    # random weights make every score a near-tie, the worst case for bf16 rounding
    assert len(a & b) >= 0.5 * len(a)
    assert fb.descriptors.dtype == np.float32
    assert np.allclose(np.linalg.norm(fb.descriptors, axis=1), 1.0, atol=1e-5)


def test_auto_backend_picks_onnxruntime_for_cpu_float32(random_weights):
    pytest.importorskip("onnxruntime")
    auto = FeatureExtractor(weights=random_weights, device="cpu")
    assert auto.backend_name.startswith("onnxruntime") and auto.dtype == torch.float32
    assert auto.descriptor_dim == 256
    if cpu_has_native_bf16():
        bf16 = FeatureExtractor(weights=random_weights, device="cpu", precision="bf16")
        assert bf16.backend_name == "torch+bfloat16+channels_last"


def test_int8_network_keeps_keypoints_and_descriptors_of_the_trained_model(astronaut_bgr, trained_weights):
    """precision='int8': ONNX Runtime static quantisation calibrated on training-split photos. On an
    evaluation photo the keypoints stay (measured 91 % within 1 px at 480x640) and descriptors barely
    move (cosine 0.9997)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    conf = dict(device="cpu", max_keypoints=1000, detection_threshold=0.005)
    fp32, int8 = FeatureExtractor(**conf), FeatureExtractor(precision="int8", **conf)
    assert int8.backend_name == "onnxruntime+int8" and not int8.runner.fallbacks and int8.dtype == torch.float32
    fa, fb = fp32(astronaut_bgr), int8(astronaut_bgr)
    distance = np.linalg.norm(fa.keypoints[:, None] - fb.keypoints[None], axis=2)
    near = distance.min(axis=1) < 1.0
    assert near.mean() > 0.8 and abs(len(fa) - len(fb)) < 0.1 * len(fa), (near.mean(), len(fa), len(fb))
    cosine = np.sum(fa.descriptors[near] * fb.descriptors[distance.argmin(axis=1)[near]], axis=1)
    assert np.median(cosine) > 0.99 and fb.descriptors.dtype == np.float32


@pytest.mark.cpu_precision  # the real decision, not the suite's pin
def test_auto_precision_follows_the_cpus_int8_instructions():
    from superpoint_ros.backends import auto_precision_is_int8, int8_weight_type

    cpu = torch.device("cpu")
    conf = dict(precision="auto", backend="auto", compile=False)
    has_ort = all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))
    assert auto_precision_is_int8(cpu, conf, cpu_dot_product=True) == has_ort
    assert not auto_precision_is_int8(cpu, conf, cpu_dot_product=False)
    for other in (dict(precision="fp32"), dict(backend="torch"), dict(compile=True)):
        assert not auto_precision_is_int8(cpu, {**conf, **other}, cpu_dot_product=True)
    assert not auto_precision_is_int8(torch.device("cuda"), conf, cpu_dot_product=True)
    # weights that do not saturate on x86 CPUs without VNNI
    assert (int8_weight_type(True), int8_weight_type(False)) == ("int8", "uint8")


@pytest.mark.cpu_precision
def test_auto_precision_is_what_this_cpu_runs(random_weights):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from superpoint_ros.backends import cpu_has_fast_int8

    auto = FeatureExtractor(weights=random_weights, device="cpu")
    assert auto.backend_name == ("onnxruntime+int8" if cpu_has_fast_int8() else "onnxruntime+float32")


def test_int8_weight_types_quantise_differently(random_model):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from superpoint_ros.backends import quantize_onnx

    kinds = {}
    for weight_type in ("int8", "uint8"):
        graph = onnx.load_from_string(quantize_onnx(random_model, weight_type))
        kinds[weight_type] = {onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in graph.graph.initializer
                              if t.name.endswith("_quantized")}
    assert "int8" in kinds["int8"] and "uint8" not in kinds["int8"]
    assert "uint8" in kinds["uint8"] and "int8" not in kinds["uint8"]
    with pytest.raises(ValueError, match="weight_type"):
        quantize_onnx(random_model, "int4")


def test_failed_int8_quantisation_falls_back_to_float32(random_model, monkeypatch):
    pytest.importorskip("onnxruntime")
    from superpoint_ros import backends

    def broken(graph, weight_type):
        raise RuntimeError("quantiser exploded")

    monkeypatch.setattr(backends, "_quantize", broken)
    monkeypatch.setattr(backends, "_quantized", {})
    extractor = FeatureExtractor(model=random_model, device="cpu", precision="int8")
    assert extractor.backend_name == "onnxruntime+float32"
    assert any("quantiser exploded" in reason for reason in extractor.runner.fallbacks)


@pytest.mark.parametrize("options", [{"backend": "auto"}, {"backend": "onnxruntime"}, {"precision": "int8"}])
def test_failed_onnx_export_falls_back_to_eager_torch(random_model, monkeypatch, options):
    pytest.importorskip("onnxruntime")
    from superpoint_ros import backends

    def broken(model, opset=17):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(backends, "export_onnx", broken)
    monkeypatch.setattr(backends, "_quantized", {})
    extractor = FeatureExtractor(model=random_model, device="cpu", **options)
    assert extractor.backend_name == "torch+float32+channels_last" and extractor.dtype == torch.float32
    reasons = extractor.runner.fallbacks
    assert "exporter exploded" in reasons[-1] and reasons[-1].startswith("ONNX export/session failed")
    # int8 tried first (its quantiser exports too), then float32 ONNX Runtime, then eager
    assert len(reasons) == (2 if "precision" in options else 1)
    image = np.random.default_rng(0).integers(0, 255, (64, 80), dtype=np.uint8)
    assert len(extractor(image).descriptors) == len(extractor(image))


def test_int8_calibration_uses_training_photos_only():
    from superpoint_ros.backends import CALIBRATION_DIR, calibration_batches
    from superpoint_ros.data_splits import split_of

    names = sorted(p.stem for p in CALIBRATION_DIR.glob("*.jpg"))
    assert len(names) >= 4 and all(split_of(n) == "train" for n in names), names
    batches = calibration_batches()
    assert all(b.shape[:2] == (1, 1) and b.dtype == np.float32 and 0 <= b.min() and b.max() <= 1 for b in batches)


@pytest.mark.parametrize("conf, message", [
    ({"backend": "torch", "precision": "int8"}, "runs on ONNX Runtime"),
    ({"backend": "tensorrt"}, "backend must be"),
    ({"precision": "fp8"}, "precision must be"),
    ({"precision": "fp16"}, "needs a CUDA device"),
    ({"backend": "onnxruntime", "precision": "bf16" if cpu_has_native_bf16() else "fp16"}, "fp"),
])
def test_bad_speed_options_are_refused(random_weights, conf, message):
    with pytest.raises(ValueError, match=message):
        FeatureExtractor(weights=random_weights, device="cpu", **conf)


def test_precision_resolution():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu, fp16=True) == torch.float32
    assert resolve_precision("auto", cuda, fp16=True) == torch.float16
    assert resolve_precision("auto", cuda, fp16=False) == torch.float32
    assert resolve_precision("fp32", cuda, fp16=True) == torch.float32
    assert resolve_precision("int8", cpu, fp16=True) == torch.float32  # int8 inside ONNX Runtime only
    with pytest.raises(ValueError, match="CPU only"):
        resolve_precision("int8", cuda, fp16=True)


def test_failed_compile_falls_back_to_eager(random_model, monkeypatch):
    def broken_compile(model, **kwargs):
        def run(x):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    runner = TorchRunner(random_model, torch.device("cpu"), torch.float32, compile=True)
    x = torch.rand(1, 1, 32, 48)
    with torch.inference_mode():
        out = runner(x)
        ref = random_model(x)
    assert "no C++ compiler" in runner.fallbacks[0] and not runner.compiled
    assert torch.allclose(out["logits"], ref["logits"], atol=1e-4)


def test_heatmap_of_channels_last_logits_is_unchanged():
    logits = torch.randn(2, 65, 6, 10)
    assert torch.equal(logits_to_heatmap(logits), logits_to_heatmap(logits.contiguous(memory_format=torch.channels_last)))


def test_input_scale_runs_smaller_and_maps_keypoints_back(random_weights, astronaut_bgr):
    image = astronaut_bgr[:480, :480]
    # float32 on every CPU: this compares the resampling, not the int8 network
    full = FeatureExtractor(weights=random_weights, device="cpu", precision="fp32", max_keypoints=200,
                            detection_threshold=0.0155)
    half = FeatureExtractor(weights=random_weights, device="cpu", precision="fp32", max_keypoints=200,
                            detection_threshold=0.0155, input_scale=0.5)
    seen = []
    hook = half.model.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    f = half(image)
    hook.remove()
    assert seen == [(240, 240)] and f.image_size == (480, 480)
    # same as running the half-size image by hand, in input pixels
    import cv2

    small = cv2.resize(image, (240, 240), interpolation=cv2.INTER_AREA)
    by_hand = full(small)
    mapped = (by_hand.keypoints + 0.5) * 2 - 0.5
    d = np.abs(f.keypoints[:, None] - mapped[None]).max(axis=2).min(axis=1)
    assert (d <= 2.0).mean() > 0.8   # resampling filters differ (antialiased bilinear vs INTER_AREA)
    assert f.keypoints.min() >= 0 and f.keypoints.max() <= 479


def test_input_scale_out_of_range_is_refused(random_weights):
    for bad in (0.0, 1.5, -1):
        with pytest.raises(ValueError, match="input_scale"):
            FeatureExtractor(weights=random_weights, device="cpu", input_scale=bad)


# --- process-wide settings: entry points only -------------------------------------------------------

def _process_knobs():
    import logging

    import cv2

    return (torch.get_num_threads(), torch.backends.cudnn.benchmark, logging.getLogger().level,
            cv2.getNumThreads())


def test_library_code_changes_no_process_wide_setting(random_model, camera_image):
    """Extractor (every backend, int8 quantisation included, a num_threads option), matching and
    the Frontend leave torch's threads, cuDNN's benchmark flag and the root logger as they were."""
    from superpoint_ros.frontend import Frontend
    from superpoint_ros.matching import match_descriptors

    before = _process_knobs()
    image = camera_image[:240, :320]
    options = [{"backend": "torch", "num_threads": 3}, {"backend": "auto", "num_threads": 3}]
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        options.append({"precision": "int8"})
    for conf in options:
        extractor = FeatureExtractor(model=random_model, device="cpu", **conf)
        features = extractor(image)
        match_descriptors(features.descriptors, features.descriptors, ratio_test=0.9, max_distance=1.0)
        assert _process_knobs() == before, conf
    frontend = Frontend({"tracking.max_age": 2, "tracking.max_time_gap": 5.0}, extractor=extractor)
    for k in range(3):  # integer stamps: 1 apart, within max_time_gap as seconds or nanoseconds
        result = frontend.process_mono(np.roll(image, 2 * k, axis=1), k, "cam")
    assert len(result.temporal.indices) > 0  # matching, RANSAC and tracking ran
    assert _process_knobs() == before


def test_configure_process_sets_the_entry_points_settings():
    import subprocess
    import sys

    code = ("import torch, cv2; from superpoint_ros.backends import configure_process as c\n"
            "c(); a = (torch.get_num_threads(), torch.backends.cudnn.benchmark)\n"
            "c(num_threads=2, seed=5); b = torch.get_num_threads()\n"
            "try:\n    c(num_threads=0)\nexcept ValueError as e:\n    print(a, b, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "(1, True) 2 num_threads must be >= 1 or None (one thread), got 0"


def _hard_correspondences(seed):
    """Homography and two-view correspondences with 70-75 % outliers: RANSAC's draws matter."""
    rng = np.random.default_rng(seed)
    n = 200
    p0 = rng.uniform(0, 640, (n, 2))
    q = np.c_[p0, np.ones(n)] @ np.array([[1.02, 0.01, 5], [0.0, 0.98, -3], [1e-5, 0, 1]]).T
    p1 = q[:, :2] / q[:, 2:] + rng.normal(0, 2.0, (n, 2))
    p1[:150] = rng.uniform(0, 640, (150, 2))
    K = np.array([[500, 0, 320], [0, 500, 240], [0, 0, 1.0]])
    X = np.c_[rng.uniform(-2, 2, (n, 2)), rng.uniform(4, 8, n)]
    x0 = X @ K.T
    x1 = X @ np.array([[0.995, 0, 0.0998], [0, 1, 0], [-0.0998, 0, 0.995]]).T + [0.3, 0, 0]
    x1 = x1 @ K.T
    x0, x1 = x0[:, :2] / x0[:, 2:], x1[:, :2] / x1[:, 2:] + rng.normal(0, 1.5, (n, 2))
    x1[:140] = rng.uniform(0, 640, (140, 2))
    return p0, p1, x0, x1, K


def test_evaluation_estimators_repeat_whatever_opencvs_global_rng_state():
    """estimate_homography (RANSAC) and essential_pose_inliers (USAC MAGSAC++) need no global
    seed: results are the same after any cv2.setRNGSeed, so a run reproduces without one."""
    import cv2

    from superpoint_ros.evaluation.metrics import estimate_homography
    from superpoint_ros.evaluation.pose import essential_pose_inliers

    for trial in range(3):
        p0, p1, x0, x1, K = _hard_correspondences(trial)
        results = []
        for seed in (0, 1, 12345, 0):
            cv2.setRNGSeed(seed)
            H = estimate_homography(p0, p1)
            R, t, inliers = essential_pose_inliers(x0, x1, K)
            results.append((H.tobytes(), R.tobytes(), t.tobytes(), inliers.tobytes()))
        assert len(set(results)) == 1, trial
    cv2.setRNGSeed(0)
