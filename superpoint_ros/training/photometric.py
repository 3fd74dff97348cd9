"""Photometric augmentation of grayscale image batches, in torch so it runs where the model runs.

All functions take ``(B, 1, H, W)`` float images in [0, 1] and a ``torch.Generator`` on the same
device, and return images of the same shape clipped to [0, 1]. Each effect is applied to a random
subset of the batch with its own random strength, as in the SuperPoint paper: brightness,
contrast, additive Gaussian noise, speckle (salt and pepper), motion blur and smooth shading.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

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


def photometric_augment(images: torch.Tensor, g: torch.Generator,
                        params: PhotometricParams = PhotometricParams()) -> torch.Tensor:
    """Random photometric changes of a ``(B, 1, H, W)`` batch (see module docstring)."""
    b, dev, p = images.shape[0], images.device, params.probability
    x = images
    x = x + _chosen(g, b, p, dev) * _uniform(g, b, -params.brightness, params.brightness, dev)
    mean = x.mean(dim=(2, 3), keepdim=True)
    gain = _uniform(g, b, params.contrast[0], params.contrast[1], dev)
    x = torch.where(_chosen(g, b, p, dev) > 0, (x - mean) * gain + mean, x)
    if params.shading > 0:
        x = torch.where(_chosen(g, b, p, dev) > 0, shading(x, g, params.shading), x)
    if params.motion_blur_max >= 3:
        x = torch.where(_chosen(g, b, p, dev) > 0, motion_blur(x, g, params.motion_blur_max), x)
    std = _uniform(g, b, params.noise_std[0], params.noise_std[1], dev) * _chosen(g, b, p, dev)
    x = x + std * torch.randn(x.shape, generator=g, device=dev, dtype=x.dtype)
    if params.speckle > 0:
        amount = _uniform(g, b, 0, params.speckle, dev) * _chosen(g, b, p, dev)
        u = torch.rand(x.shape, generator=g, device=dev, dtype=x.dtype)
        x = torch.where(u < amount / 2, torch.zeros_like(x), x)
        x = torch.where(u > 1 - amount / 2, torch.ones_like(x), x)
    return x.clamp(0, 1)
