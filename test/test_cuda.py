"""CUDA path: runs only where a GPU is present (skipped on CPU-only machines and CI)."""
import numpy as np
import pytest
import torch

from superpoint_ros import FeatureExtractor, match_descriptors

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def overlap(a, b, tol=1.0):
    d = np.linalg.norm(a[:, None] - b[None], axis=2)
    return float((d.min(axis=1) <= tol).mean())


def test_cuda_fp32_matches_cpu_fp32(trained_weights, camera_image):
    conf = dict(weights=trained_weights, max_keypoints=500)
    cpu = FeatureExtractor(device="cpu", **conf)(camera_image)
    gpu = FeatureExtractor(device="cuda", fp16=False, **conf)(camera_image)
    assert abs(len(cpu) - len(gpu)) <= 0.02 * len(cpu)
    assert overlap(cpu.keypoints, gpu.keypoints) > 0.97
    assert overlap(gpu.keypoints, cpu.keypoints) > 0.97


def test_cuda_fp16_matches_cpu_fp32(trained_weights, camera_image):
    conf = dict(weights=trained_weights, max_keypoints=500)
    cpu = FeatureExtractor(device="cpu", **conf)(camera_image)
    gpu_ex = FeatureExtractor(device="auto", **conf)
    assert gpu_ex.device.type == "cuda" and gpu_ex.dtype == torch.float16
    gpu = gpu_ex(camera_image)
    # fp16 moves scores near the detection threshold across it: counts agree within 5 %
    assert abs(len(gpu) - len(cpu)) <= 0.05 * len(cpu)
    assert overlap(cpu.keypoints, gpu.keypoints) > 0.9
    m = match_descriptors(cpu.descriptors, gpu.descriptors)
    same = np.linalg.norm(cpu.keypoints[m.indices[:, 0]] - gpu.keypoints[m.indices[:, 1]], axis=1) < 1.0
    assert same.mean() > 0.9


def test_cuda_batch_equals_one_by_one(random_weights, camera_image):
    ex = FeatureExtractor(device="cuda", weights=random_weights, fp16=False, max_keypoints=300,
                          detection_threshold=0.0155)
    a, b = camera_image[:240, :320], camera_image[200:440, 100:420]
    batch = ex.extract_batch([a, b])
    for image, fb in zip([a, b], batch):
        f1 = ex(image)
        assert overlap(f1.keypoints, fb.keypoints, tol=0.1) > 0.97


def test_matching_runs_on_the_descriptor_device():
    d = torch.nn.functional.normalize(torch.randn(1000, 256, device="cuda"), dim=1)
    from superpoint_ros.matching import mutual_nn_match_tensors

    indices, distances = mutual_nn_match_tensors(d, d)
    assert indices.device.type == "cuda" and len(indices) == 1000


def test_rectified_stereo_matching_on_cuda_equals_the_cpu():
    """The candidate-pair stereo matcher (searchsorted row bands, scatter_reduce) on the GPU."""
    from superpoint_ros.geometry import match_rectified_stereo

    rng = np.random.default_rng(0)
    n = 800
    left = np.c_[rng.uniform(0, 640, n), rng.uniform(0, 480, n)].astype(np.float32)
    right = (left - np.c_[rng.uniform(0, 40, n), rng.uniform(-1, 1, n)]).astype(np.float32)
    desc = rng.normal(size=(n, 256)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    noisy = desc + 0.2 * rng.normal(size=desc.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    cpu = match_rectified_stereo(left, desc, right, noisy, 2.0, 0.0, 64.0, 0.9, 1.2)
    gpu = match_rectified_stereo(left, desc, right, noisy, 2.0, 0.0, 64.0, 0.9, 1.2, device=torch.device("cuda"))
    assert len(cpu[0]) > 100 and np.array_equal(cpu[0], gpu[0]) and np.array_equal(cpu[2], gpu[2])
    assert np.allclose(cpu[1], gpu[1], atol=1e-5)
