"""Photometric augmentation (superpoint_ros.training.photometric), incl. the v2 effects."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from superpoint_ros.training.photometric import (
    PhotometricParams, gaussian_blur, jpeg_roundtrip, photometric_augment, shot_noise)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
#: every effect off: a test switches on one at a time
NOTHING = dict(probability=1.0, brightness=0.0, contrast=(1.0, 1.0), noise_std=(0.0, 0.0), speckle=0.0,
               motion_blur_max=0, shading=0.0)


def _v2_params() -> PhotometricParams:
    conf = yaml.safe_load((ROOT / "config/train/v2_superpoint.yaml").read_text())
    return PhotometricParams.from_dict(conf["photometric"])


def _photo_batch(camera_image, count=6) -> torch.Tensor:
    """``(count, 1, 96, 128)`` float crops of a real photo in [0, 1]."""
    small = cv2.resize(camera_image, (256, 192), interpolation=cv2.INTER_AREA)
    crops = [small[k * 16:k * 16 + 96, k * 20:k * 20 + 128] for k in range(count)]
    return torch.from_numpy(np.stack(crops)).float()[:, None] / 255


def _augment(images, seed, **params):
    return photometric_augment(images, torch.Generator().manual_seed(seed), PhotometricParams(**params))


@pytest.mark.parametrize("params", [PhotometricParams(), "v2"], ids=["default", "v2"])
def test_shape_range_and_determinism(camera_image, params):
    params = _v2_params() if params == "v2" else params
    images = _photo_batch(camera_image)
    a = photometric_augment(images, torch.Generator().manual_seed(5), params)
    b = photometric_augment(images, torch.Generator().manual_seed(5), params)
    c = photometric_augment(images, torch.Generator().manual_seed(6), params)
    assert a.shape == images.shape and a.dtype == torch.float32
    assert float(a.min()) >= 0 and float(a.max()) <= 1 and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert not torch.equal(a, images)


def test_new_effects_are_off_by_default_and_draw_no_randomness(camera_image):
    """Older configs (v1) must train exactly as before: the new keys at their defaults change
    neither the result nor the generator's stream."""
    images = _photo_batch(camera_image)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = photometric_augment(images, g1, PhotometricParams())
    b = photometric_augment(images, g2, PhotometricParams(low_light=(1, 1), gamma=(1, 1), blur_sigma=(0, 0),
                                                          shot_noise_peak=(0, 0), jpeg_quality=(0, 0)))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_gaussian_read_noise_has_the_drawn_std():
    flat = torch.full((4, 1, 64, 64), 0.5)
    out = _augment(flat, 0, **{**NOTHING, "noise_std": (0.08, 0.08)})
    assert abs(float(out.std()) - 0.08) < 0.004


def test_shot_noise_variance_follows_the_signal():
    """Poisson noise: variance = level / peak, so a darker image is relatively noisier."""
    g = torch.Generator().manual_seed(0)
    peak = torch.full((1, 1, 1, 1), 50.0)
    for level in (0.1, 0.6):
        out = shot_noise(torch.full((1, 1, 200, 200), level), g, peak)
        assert abs(float(out.mean()) - level) < 0.01
        assert float(out.var()) == pytest.approx(level / 50, rel=0.08)
    quantised = shot_noise(torch.full((1, 1, 8, 8), 0.3), g, peak) * 50  # whole photon counts
    torch.testing.assert_close(quantised, quantised.round())


def test_gaussian_blur_spreads_an_impulse_by_sigma():
    impulse = torch.zeros(2, 1, 41, 41)
    impulse[:, 0, 20, 20] = 1.0
    out = gaussian_blur(impulse, torch.tensor([1.5, 0.0]))
    assert float(out[0].sum()) == pytest.approx(1.0, abs=1e-5)
    ys, xs = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
    variance_x = float((out[0, 0] * (xs - 20) ** 2).sum())
    assert variance_x == pytest.approx(1.5 ** 2, rel=0.02)
    torch.testing.assert_close(out[1], impulse[1])  # sigma 0 leaves an image unchanged


def test_low_light_and_gamma_are_the_drawn_tone_curves(camera_image):
    images = _photo_batch(camera_image, 2)
    torch.testing.assert_close(_augment(images, 0, **{**NOTHING, "low_light": (0.25, 0.25)}), images * 0.25)
    torch.testing.assert_close(_augment(images, 0, **{**NOTHING, "gamma": (2.0, 2.0)}), images ** 2)


def test_jpeg_adds_block_artefacts_that_grow_as_quality_drops(camera_image):
    images = _photo_batch(camera_image, 2)
    low = jpeg_roundtrip(images, torch.tensor([10, 10]))
    high = jpeg_roundtrip(images, torch.tensor([95, 95]))
    assert float((low - images).abs().mean()) > 3 * float((high - images).abs().mean())
    torch.testing.assert_close(low * 255, (low * 255).round())  # 8-bit like a decoded stream
    # blocking: the jump across 8x8 block borders is larger than inside the blocks
    dx = (low[..., 1:] - low[..., :-1]).abs().mean(dim=(0, 1, 2))
    at_borders = dx[7::8].mean()
    inside = torch.cat([dx[k::8] for k in range(7)]).mean()
    assert float(at_borders) > 1.2 * float(inside)


def test_every_effect_is_applied_to_a_random_subset(camera_image):
    """probability 0.5: some images of a batch of 16 are changed by an effect, some are not."""
    images = _photo_batch(camera_image, 4).repeat(4, 1, 1, 1)
    for effect in ({"gamma": (2.0, 2.0)}, {"low_light": (0.5, 0.5)}, {"blur_sigma": (1.0, 1.0)},
                   {"shot_noise_peak": (30.0, 30.0)}, {"jpeg_quality": (20, 20)}):
        out = _augment(images, 3, **{**NOTHING, "probability": 0.5, **effect})
        changed = (out - images).abs().flatten(1).amax(1) > 1e-6
        assert 0 < int(changed.sum()) < len(images), effect


@pytest.mark.parametrize("bad", [{"jpeg_quality": (0, 150)}, {"jpeg_quality": (50, 20)}, {"gamma": (0.0, 1.0)},
                                 {"low_light": (0.0, 1.0)}, {"blur_sigma": (-1.0, 1.0)},
                                 {"shot_noise_peak": (0.0, 100.0)}, {"noise_std": (0.1, 0.0)}])
def test_bad_ranges_are_specific_errors(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"photometric.{name}"):
        PhotometricParams.from_dict({k: list(v) for k, v in bad.items()})
