"""The SuperPoint network: a shared VGG-style encoder with a detector and a descriptor head.

Layer names follow the published model (``conv1a`` ... ``convDb``) so that its state_dict loads
without renaming. The architecture is a dataclass so a smaller variant (fewer channels, a shorter
descriptor) can be declared for CPU robots and stored next to its weights.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

CELL = 8  # the encoder downsamples by 8: each coarse cell covers 8x8 pixels
DETECTOR_CHANNELS = CELL * CELL + 1  # 64 pixel positions + 1 "no keypoint" dustbin


@dataclass(frozen=True)
class SuperPointConfig:
    """Architecture. The defaults are the published SuperPoint."""

    encoder_channels: Tuple[int, int, int, int] = (64, 64, 128, 128)
    head_channels: int = 256
    descriptor_dim: int = 256
    #: A per-channel scale and shift after each encoder ReLU (``affine1a`` ... ``affine4b``): the
    #: inference form of a BatchNorm that follows its activation, as in rpautrat/SuperPoint's
    #: PyTorch model (see ``weights.convert_batchnorm_layout``). Off for every other model.
    post_relu_affine: bool = False

    def __post_init__(self):
        object.__setattr__(self, "encoder_channels", tuple(int(c) for c in self.encoder_channels))
        object.__setattr__(self, "post_relu_affine", bool(self.post_relu_affine))
        if len(self.encoder_channels) != 4 or min(self.encoder_channels) < 1:
            raise ValueError(f"encoder_channels must be 4 positive ints, got {self.encoder_channels}")
        if self.head_channels < 1 or self.descriptor_dim < 1:
            raise ValueError("head_channels and descriptor_dim must be positive")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["encoder_channels"] = list(self.encoder_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SuperPointConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown SuperPointConfig fields: {sorted(unknown)}")
        return cls(**d)


class ChannelAffine(nn.Module):
    """``x * weight[c] + bias[c]`` per channel of a ``(B, C, H, W)`` tensor (a frozen BatchNorm)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


#: Names of the encoder's convolutions, in order (each is followed by a ReLU).
ENCODER_LAYERS = ("1a", "1b", "2a", "2b", "3a", "3b", "4a", "4b")

#: A variant for CPU robots: about 4x fewer encoder FLOPs and a 128-d descriptor.
SMALL = SuperPointConfig(encoder_channels=(32, 32, 64, 64), head_channels=128, descriptor_dim=128)


class SuperPointNet(nn.Module):
    """Dense SuperPoint outputs for a batch of grayscale images.

    Input: ``(B, 1, H, W)`` float in [0, 1], H and W multiples of 8.
    Output dict:
      - ``logits``: ``(B, 65, H/8, W/8)`` detector logits (channel 64 is the dustbin);
      - ``descriptors``: ``(B, D, H/8, W/8)`` coarse descriptors, L2-normalised over D.
    """

    def __init__(self, config: SuperPointConfig = SuperPointConfig()):
        super().__init__()
        self.config = config
        c1, c2, c3, c4 = config.encoder_channels
        h, d = config.head_channels, config.descriptor_dim
        conv = lambda i, o, k=3: nn.Conv2d(i, o, kernel_size=k, stride=1, padding=k // 2)  # noqa: E731
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv1a, self.conv1b = conv(1, c1), conv(c1, c1)
        self.conv2a, self.conv2b = conv(c1, c2), conv(c2, c2)
        self.conv3a, self.conv3b = conv(c2, c3), conv(c3, c3)
        self.conv4a, self.conv4b = conv(c3, c4), conv(c4, c4)
        self.convPa, self.convPb = conv(c4, h), conv(h, DETECTOR_CHANNELS, k=1)
        self.convDa, self.convDb = conv(c4, h), conv(h, d, k=1)
        # Identity (no parameters, no state_dict keys) unless the architecture asks for the affine
        for name, channels in zip(ENCODER_LAYERS, (c1, c1, c2, c2, c3, c3, c4, c4)):
            setattr(self, f"affine{name}", ChannelAffine(channels) if config.post_relu_affine else nn.Identity())

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        x = self.affine1a(self.relu(self.conv1a(image)))
        x = self.pool(self.affine1b(self.relu(self.conv1b(x))))
        x = self.affine2a(self.relu(self.conv2a(x)))
        x = self.pool(self.affine2b(self.relu(self.conv2b(x))))
        x = self.affine3a(self.relu(self.conv3a(x)))
        x = self.pool(self.affine3b(self.relu(self.conv3b(x))))
        x = self.affine4a(self.relu(self.conv4a(x)))
        return self.affine4b(self.relu(self.conv4b(x)))

    def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"expected a (B, 1, H, W) image tensor, got shape {tuple(image.shape)}")
        if image.shape[-2] % CELL or image.shape[-1] % CELL:
            raise ValueError(f"H and W must be multiples of {CELL}, got {tuple(image.shape[-2:])}")
        features = self.encode(image)
        logits = self.convPb(self.relu(self.convPa(features)))
        descriptors = self.convDb(self.relu(self.convDa(features)))
        return {"logits": logits, "descriptors": F.normalize(descriptors, p=2, dim=1)}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["CELL", "DETECTOR_CHANNELS", "ENCODER_LAYERS", "ChannelAffine", "SMALL", "SuperPointConfig", "SuperPointNet",
           "count_parameters"]
