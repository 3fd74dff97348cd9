"""Photometric augmentation of grayscale image batches, in torch so it runs where the model runs.

All functions take ``(B, 1, H, W)`` float images in [0, 1] and a ``torch.Generator`` on the same
device, and return images of the same shape clipped to [0, 1]. Each effect is applied to a random
subset of the batch with its own random strength, as in the SuperPoint paper: brightness,
contrast, additive Gaussian noise, speckle (salt and pepper), motion blur and smooth shading.

Effects for the conditions a robot camera meets and the paper's list lacks, each off by default
(so older configs train as before) and switched on by its range in ``PhotometricParams``: low light
(a gain < 1), gamma, Gaussian (defocus) blur, Poisson shot noise, JPEG re-encoding. The order is
that of a camera: exposure and tone (brightness, contrast, low light, gamma, shading), optics
(motion and defocus blur), sensor noise (shot noise, read noise, speckle), then compression.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PhotometricParams:
    probability: float = 0.5          # chance that each effect is applied to an image
    brightness: float = 0.2           # additive, +-
    contrast: tuple = (0.5, 1.5)      # multiplicative around the mean
    noise_std: tuple = (0.0, 0.04)    # additive Gaussian
    speckle: float = 0.005            # fraction of salt-and-pepper pixels (max)
    motion_blur_max: int = 7          # kernel length in px (odd)
    shading: float = 0.3              # max darkening of a smooth random shadow
    # off by default ((1, 1) gain/gamma, zero ranges); see the module docstring
    low_light: tuple = (1.0, 1.0)     # gain (multiplicative, <= 1 darkens), uniform in the range
    gamma: tuple = (1.0, 1.0)         # x ** gamma, log-uniform in the range
    blur_sigma: tuple = (0.0, 0.0)    # Gaussian blur sigma in px, uniform in the range
    shot_noise_peak: tuple = (0.0, 0.0)  # photons at white: Poisson(x * peak) / peak, log-uniform; 0: off
    jpeg_quality: tuple = (0, 0)      # JPEG quality, uniform integer in the range; 0: off (CPU round trip)

    def __post_init__(self):
        for name in ("contrast", "noise_std", "low_light", "gamma", "blur_sigma", "shot_noise_peak", "jpeg_quality"):
            low, high = getattr(self, name)
            if not low <= high:
                raise ValueError(f"photometric.{name}: the range must be [low, high], got {[low, high]}")
        if not 0 < self.low_light[0] <= self.low_light[1]:
            raise ValueError(f"photometric.low_light must be gains > 0, got {list(self.low_light)}")
        if self.gamma[0] <= 0:
            raise ValueError(f"photometric.gamma must be > 0, got {list(self.gamma)}")
        if self.blur_sigma[0] < 0:
            raise ValueError(f"photometric.blur_sigma must be >= 0 px, got {list(self.blur_sigma)}")
        if self.shot_noise_peak[1] > 0 and self.shot_noise_peak[0] <= 0:
            raise ValueError(f"photometric.shot_noise_peak must be photon counts > 0 (or [0, 0]: off), "
                             f"got {list(self.shot_noise_peak)}")
        if self.jpeg_quality[1] > 0 and not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"photometric.jpeg_quality must lie in 1..100 (or [0, 0]: off), "
                             f"got {list(self.jpeg_quality)}")

    @classmethod
    def from_dict(cls, d: dict) -> "PhotometricParams":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown photometric parameters: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict:
        return asdict(self)


def _uniform(g: torch.Generator, b: int, low: float, high: float, device) -> torch.Tensor:
    return torch.rand(b, 1, 1, 1, generator=g, device=device) * (high - low) + low


def _chosen(g: torch.Generator, b: int, p: float, device) -> torch.Tensor:
    return (torch.rand(b, 1, 1, 1, generator=g, device=device) < p).float()


def motion_blur(images: torch.Tensor, g: torch.Generator, max_length: int) -> torch.Tensor:
    """Blur each image along a random direction with a line kernel of random length <= max_length."""
    b = images.shape[0]
    size = max_length | 1
    radius = size // 2
    coords = torch.arange(size, device=images.device, dtype=images.dtype) - radius
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    angle = torch.rand(b, generator=g, device=images.device) * math.pi
    length = torch.rand(b, generator=g, device=images.device) * radius + 0.5
    # distance of each kernel tap to the line through the centre at that angle, and along it
    across = (-xx[None] * torch.sin(angle)[:, None, None] + yy[None] * torch.cos(angle)[:, None, None]).abs()
    along = (xx[None] * torch.cos(angle)[:, None, None] + yy[None] * torch.sin(angle)[:, None, None]).abs()
    kernel = ((across <= 0.5) & (along <= length[:, None, None])).to(images.dtype)
    kernel = kernel / kernel.sum(dim=(1, 2), keepdim=True)
    # grouped conv: one kernel per image
    out = F.conv2d(F.pad(images.transpose(0, 1), (radius,) * 4, mode="replicate"), kernel[:, None], groups=b)
    return out.transpose(0, 1)


def shading(images: torch.Tensor, g: torch.Generator, strength: float) -> torch.Tensor:
    """Multiply by a smooth random shadow (a blurred low-resolution random field)."""
    b, _, h, w = images.shape
    field = torch.rand(b, 1, 3, 4, generator=g, device=images.device, dtype=images.dtype)
    field = F.interpolate(field, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    return images * (1 - strength * field)


def _log_uniform(g: torch.Generator, b: int, low: float, high: float, device) -> torch.Tensor:
    return torch.exp(_uniform(g, b, math.log(low), math.log(high), device))


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own Gaussian: ``sigma`` is ``(B,)`` px (0: unchanged). Separable,
    replicate padding, kernel radius ``ceil(3 * max(sigma))``."""
    b = images.shape[0]
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    taps = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    s = sigma.to(images.dtype).clamp(min=1e-3)[:, None]
    kernel = torch.exp(-0.5 * (taps[None] / s) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, K)
    x = images.transpose(0, 1)  # (1, B, H, W): one group per image
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=b)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=b)
    return x.transpose(0, 1)


def shot_noise(images: torch.Tensor, g: torch.Generator, peak: torch.Tensor) -> torch.Tensor:
    """Poisson (photon) noise: ``Poisson(x * peak) / peak`` per pixel, ``peak`` ``(B, 1, 1, 1)`` photons
    at white; the variance is ``x / peak``, so dark pixels of a low-light image are the noisiest
    relative to their signal."""
    rate = images.clamp(0, 1) * peak
    return torch.poisson(rate, generator=g) / peak


def jpeg_roundtrip(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Encode and decode each image as 8-bit JPEG at its ``quality`` (``(B,)`` int, 1..100) with
    OpenCV on the CPU (blocking and ringing as a compressed camera stream shows them)."""
    pixels = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    out = np.empty_like(pixels)
    for k, q in enumerate(quality.cpu().tolist()):
        ok, buf = cv2.imencode(".jpg", pixels[k, 0], [cv2.IMWRITE_JPEG_QUALITY, int(q)])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        out[k, 0] = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return torch.from_numpy(out).to(device=images.device, dtype=images.dtype) / 255


def photometric_augment(images: torch.Tensor, g: torch.Generator,
                        params: PhotometricParams = PhotometricParams()) -> torch.Tensor:
    """Random photometric changes of a ``(B, 1, H, W)`` batch (see module docstring)."""
    b, dev, p = images.shape[0], images.device, params.probability
    x = images
    x = x + _chosen(g, b, p, dev) * _uniform(g, b, -params.brightness, params.brightness, dev)
    mean = x.mean(dim=(2, 3), keepdim=True)
    gain = _uniform(g, b, params.contrast[0], params.contrast[1], dev)
    x = torch.where(_chosen(g, b, p, dev) > 0, (x - mean) * gain + mean, x)
    if params.low_light != (1.0, 1.0):
        gain = _uniform(g, b, params.low_light[0], params.low_light[1], dev)
        x = torch.where(_chosen(g, b, p, dev) > 0, x * gain, x)
    if params.gamma != (1.0, 1.0):
        exponent = _log_uniform(g, b, params.gamma[0], params.gamma[1], dev)
        x = torch.where(_chosen(g, b, p, dev) > 0, x.clamp(0, 1) ** exponent, x)
    if params.shading > 0:
        x = torch.where(_chosen(g, b, p, dev) > 0, shading(x, g, params.shading), x)
    if params.motion_blur_max >= 3:
        x = torch.where(_chosen(g, b, p, dev) > 0, motion_blur(x, g, params.motion_blur_max), x)
    if params.blur_sigma[1] > 0:
        sigma = _uniform(g, b, params.blur_sigma[0], params.blur_sigma[1], dev) * _chosen(g, b, p, dev)
        x = gaussian_blur(x, sigma.flatten())
    if params.shot_noise_peak[1] > 0:
        peak = _log_uniform(g, b, params.shot_noise_peak[0], params.shot_noise_peak[1], dev)
        x = torch.where(_chosen(g, b, p, dev) > 0, shot_noise(x, g, peak), x)
    std = _uniform(g, b, params.noise_std[0], params.noise_std[1], dev) * _chosen(g, b, p, dev)
    x = x + std * torch.randn(x.shape, generator=g, device=dev, dtype=x.dtype)
    if params.speckle > 0:
        amount = _uniform(g, b, 0, params.speckle, dev) * _chosen(g, b, p, dev)
        u = torch.rand(x.shape, generator=g, device=dev, dtype=x.dtype)
        x = torch.where(u < amount / 2, torch.zeros_like(x), x)
        x = torch.where(u > 1 - amount / 2, torch.ones_like(x), x)
    if params.jpeg_quality[1] > 0:
        low, high = int(params.jpeg_quality[0]), int(params.jpeg_quality[1])
        quality = torch.randint(low, high + 1, (b,), generator=g, device=dev)
        chosen = _chosen(g, b, p, dev)
        x = torch.where(chosen > 0, jpeg_roundtrip(x, quality), x)
    return x.clamp(0, 1)
