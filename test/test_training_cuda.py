"""Training on CUDA: runs only where a GPU is present (skipped on CPU-only machines and CI)."""
import numpy as np
import pytest
import torch

from superpoint_ros.training import photometric
from superpoint_ros.training import train_magicpoint as tm
from superpoint_ros.training.config import load_config
from superpoint_ros.training.engine import train
from superpoint_ros.training.homographies import sample_homography, warp_images, warp_keypoint_maps
from superpoint_ros.training.losses import descriptor_loss, detector_loss
from superpoint_ros.weights import load_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

TINY_MODEL = {"encoder_channels": [8, 8, 16, 16], "head_channels": 32, "descriptor_dim": 16}


def test_warps_and_losses_agree_between_cpu_and_cuda():
    rng = np.random.default_rng(0)
    images = torch.rand(3, 1, 48, 64)
    hom = torch.from_numpy(np.stack([sample_homography(rng, (48, 64)) for _ in range(3)]))
    cpu = warp_images(images, hom)
    gpu = warp_images(images.cuda(), hom.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-5, rtol=0)
    points = torch.rand(3, 20, 2) * torch.tensor([64.0, 48.0])
    valid = torch.ones(3, 20, dtype=torch.bool)
    assert torch.equal(warp_keypoint_maps(points, valid, hom, (48, 64)),
                       warp_keypoint_maps(points.cuda(), valid.cuda(), hom.cuda(), (48, 64)).cpu())
    logits = torch.randn(3, 65, 6, 8)
    kp = warp_keypoint_maps(points, valid, hom, (48, 64))
    g = lambda device: torch.Generator(device=device).manual_seed(0)  # noqa: E731
    det_cpu = detector_loss(logits, kp, generator=g("cpu"))
    det_gpu = detector_loss(logits.cuda(), kp.cuda(), generator=g("cuda"))
    assert abs(float(det_cpu) - float(det_gpu)) < 0.3  # tie-breaking noise differs per device
    d0 = torch.nn.functional.normalize(torch.randn(3, 16, 6, 8), dim=1)
    d1 = torch.nn.functional.normalize(torch.randn(3, 16, 6, 8), dim=1)
    torch.testing.assert_close(descriptor_loss(d0.cuda(), d1.cuda(), hom.cuda()).cpu(), descriptor_loss(d0, d1, hom),
                               atol=1e-5, rtol=1e-5)


def test_photometric_augmentation_runs_on_cuda_with_a_cuda_generator():
    images = torch.rand(4, 1, 32, 40, device="cuda")
    out = photometric.photometric_augment(images, torch.Generator(device="cuda").manual_seed(1))
    assert out.device.type == "cuda" and out.shape == images.shape and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_magicpoint_trains_on_cuda_with_autocast_and_resumes(tmp_path, amp):
    overrides = [f"model={TINY_MODEL}", "batch_size=8", "num_workers=2", "synthetic.height=48", "synthetic.width=64",
                 "log_every=1", "checkpoint_every=2", "device=cuda", f"amp={amp}", "deterministic=true"]
    conf = load_config(tm.default_conf, None, overrides)
    dataset = tm.build_dataset(conf)
    straight = train({**conf, "max_steps": 4}, dataset, tm.magicpoint_step, tmp_path / "a", tool="mp",
                     provenance={}, progress=False)
    assert np.isfinite(straight["last"]["loss"])
    model, provenance = load_model(tmp_path / "a" / "model.pt")
    assert provenance["device"].startswith("cuda") and provenance["amp"] == amp
    train({**conf, "max_steps": 2}, dataset, tm.magicpoint_step, tmp_path / "b", tool="mp", provenance={},
          progress=False)
    train({**conf, "max_steps": 4}, dataset, tm.magicpoint_step, tmp_path / "b", tool="mp", provenance={},
          progress=False)
    a = torch.load(tmp_path / "a" / "state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "state.pt", weights_only=True)["model"]
    for key in a:  # with deterministic cuDNN kernels a resume is exact on the GPU too
        assert torch.equal(a[key], b[key]), key
