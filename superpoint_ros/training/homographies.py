"""Random homographies for training and homographic adaptation, and warping with them.

Convention: a homography ``H`` (3x3) maps pixel coordinates of a *source* image A to those of the
*warped* image B, ``x_B ~ H @ [x_A, y_A, 1]``, in the package's pixel-centre convention (pixel
``(col, row)`` is the point ``(x=col, y=row)``; see ``superpoint_ros.keypoints``). This is exactly
what ``cv2.warpPerspective(A, H, (W, H))`` computes, and ``warp_images`` reproduces it in torch
(batched, any device) so augmentation runs on the GPU.

Sampling keeps the content in view: the warped frame B is filled entirely by image A — we draw the
quadrilateral of A that B shows (a scaled, rotated, shifted, perspective-jittered rectangle) and
reject it unless it is convex and lies inside A. So there are no black borders and every warp is
invertible and orientation-preserving.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class HomographyParams:
    """Ranges of the random warp. Scales/shifts are fractions of the image size."""

    scale_min: float = 0.6        # side of the shown quad relative to the image (<= 1: zoom in)
    scale_max: float = 1.0
    max_angle_deg: float = 25.0   # in-plane rotation
    perspective: float = 0.15     # independent jitter of each corner, fraction of the quad size
    max_aspect_change: float = 0.15  # anisotropic scaling, log-uniform in [1/(1+a), 1+a]
    max_tries: int = 50           # rejection sampling attempts before falling back to a safe warp
    # True: a quad too large for the image at its rotation is shrunk until it fits (large angles then
    # zoom in) instead of redrawn, so rotations follow the drawn range exactly; False keeps the
    # rejection sampling of older configs, which under-samples large angles at large scales
    shrink_to_fit: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> "HomographyParams":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown homography parameters: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def image_frame(height: int, width: int) -> np.ndarray:
    """The 4 outer corners of a ``height x width`` image, ``(4, 2)`` xy, clockwise from top-left."""
    return np.array([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]],
                    dtype=np.float64)


def homography_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 homography mapping 4 ``src`` points to 4 ``dst`` points (DLT, h33 = 1)."""
    a, b = [], []
    for (x, y), (u, v) in zip(src, dst):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b.extend([u, v])
    h = np.linalg.solve(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return np.append(h, 1.0).reshape(3, 3)


def _is_convex(quad: np.ndarray) -> bool:
    edges = np.roll(quad, -1, axis=0) - quad
    cross = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
    return bool(np.all(cross > 1e-6))  # clockwise in image coords (y down) -> positive


def _fit_factor(quad: np.ndarray, frame: np.ndarray) -> float:
    """The scale (<= 1) about the origin that makes ``quad``'s extent fit inside ``frame``'s."""
    extent = quad.max(0) - quad.min(0)
    room = frame.max(0) - frame.min(0)
    return float(min(1.0, np.min(room / extent) * (1 - 1e-9)))


def sample_homography(rng: np.random.Generator, shape: Tuple[int, int],
                      params: HomographyParams = HomographyParams()) -> np.ndarray:
    """A random valid homography (float64 3x3) from an ``(H, W)`` image to a warped one of the same size.

    The warped image shows a quad of the source that lies inside it (see module docstring).
    """
    height, width = shape
    frame = image_frame(height, width)
    center = np.array([(width - 1) / 2, (height - 1) / 2])
    for _ in range(params.max_tries):
        scale = rng.uniform(params.scale_min, params.scale_max)
        aspect = np.exp(rng.uniform(-1, 1) * np.log1p(params.max_aspect_change))
        angle = np.deg2rad(rng.uniform(-params.max_angle_deg, params.max_angle_deg))
        quad = (frame - center) * scale * np.array([np.sqrt(aspect), 1 / np.sqrt(aspect)])
        quad = quad + rng.uniform(-params.perspective, params.perspective, size=(4, 2)) * scale * np.array(
            [width, height]) / 2
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        quad = quad @ rotation.T
        if params.shrink_to_fit:
            quad = quad * _fit_factor(quad, frame)
        # translate anywhere that keeps the quad inside the source image
        low = frame.min(0) - quad.min(0)
        high = frame.max(0) - quad.max(0)
        if np.any(low > high) or not _is_convex(quad):
            continue
        quad = quad + rng.uniform(low, high)  # the quad is origin-centred; any shift in [low, high] fits
        # quad holds the source points shown at the warped image's corners
        return np.linalg.inv(homography_from_points(frame, quad))
    # fall back to a mild central zoom, always valid
    scale = max(params.scale_min, 0.8)
    quad = (frame - center) * scale + center
    return np.linalg.inv(homography_from_points(frame, quad))


def sample_homographies(rng: np.random.Generator, count: int, shape: Tuple[int, int],
                        params: HomographyParams = HomographyParams()) -> np.ndarray:
    """``count`` homographies stacked as ``(count, 3, 3)`` float64."""
    return np.stack([sample_homography(rng, shape, params) for _ in range(count)])


def warp_points(homography, points):
    """Apply ``(3, 3)`` or ``(B, 3, 3)`` homographies to ``(N, 2)`` / ``(B, N, 2)`` xy points.

    Works on numpy arrays and torch tensors alike; returns the same kind and dtype as ``points``.
    """
    if isinstance(points, torch.Tensor):
        h = torch.as_tensor(homography, dtype=torch.float64, device=points.device)
        p = points.to(torch.float64)
        ones = torch.ones_like(p[..., :1])
        out = torch.cat([p, ones], -1) @ h.transpose(-1, -2)
        return (out[..., :2] / out[..., 2:]).to(points.dtype)
    h = np.asarray(homography, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    out = np.concatenate([p, np.ones_like(p[..., :1])], -1) @ np.swapaxes(h, -1, -2)
    return (out[..., :2] / out[..., 2:]).astype(np.asarray(points).dtype if np.asarray(points).dtype.kind == "f"
                                                else np.float64)


def invert_homographies(homographies: torch.Tensor) -> torch.Tensor:
    """Inverse of ``(..., 3, 3)`` homographies, up to scale, by the adjugate (elementwise ops only:
    unlike ``torch.linalg.inv`` on CUDA it never synchronises with the host)."""
    h = homographies
    a, b, c = h[..., 0, 0], h[..., 0, 1], h[..., 0, 2]
    d, e, f = h[..., 1, 0], h[..., 1, 1], h[..., 1, 2]
    g, i, k = h[..., 2, 0], h[..., 2, 1], h[..., 2, 2]
    adjugate = torch.stack([
        torch.stack([e * k - f * i, c * i - b * k, b * f - c * e], -1),
        torch.stack([f * g - d * k, a * k - c * g, c * d - a * f], -1),
        torch.stack([d * i - e * g, b * g - a * i, a * e - b * d], -1),
    ], -2)
    determinant = a * (e * k - f * i) - b * (d * k - f * g) + c * (d * i - e * g)
    return adjugate / determinant[..., None, None]


def warp_images(images: torch.Tensor, homographies: torch.Tensor, mode: str = "bilinear",
                padding_mode: str = "zeros") -> torch.Tensor:
    """Warp ``(B, C, H, W)`` images by ``(B, 3, 3)`` homographies (source -> warped), same size out.

    Output pixel ``x_B`` samples the source at ``H^-1 x_B`` (bilinear), like
    ``cv2.warpPerspective(src, H, (W, H))``. Pixels mapped from outside the source are 0.
    """
    b, _, height, width = images.shape
    h_inv = invert_homographies(homographies.to(device=images.device, dtype=torch.float64))
    ys, xs = torch.meshgrid(torch.arange(height, device=images.device, dtype=torch.float64),
                            torch.arange(width, device=images.device, dtype=torch.float64), indexing="ij")
    grid = torch.stack([xs, ys], -1).reshape(1, -1, 2).expand(b, -1, -1)
    source = warp_points(h_inv, grid)  # (B, H*W, 2) source pixel coordinates
    size = torch.tensor([width, height], device=images.device, dtype=torch.float64)
    normalised = ((source + 0.5) / size * 2 - 1).reshape(b, height, width, 2)
    return F.grid_sample(images, normalised.to(images.dtype), mode=mode, padding_mode=padding_mode,
                         align_corners=False)


def warp_keypoint_maps(points: torch.Tensor, valid: torch.Tensor, homographies: torch.Tensor,
                       shape: Tuple[int, int]) -> torch.Tensor:
    """Binary keypoint maps ``(B, H, W)`` float32 of padded point sets warped by ``homographies``.

    ``points``: ``(B, N, 2)`` xy; ``valid``: ``(B, N)`` bool (padding is False). Warped points are
    rounded to the nearest pixel; those landing outside the image are dropped.
    """
    warped = warp_points(homographies, points.to(torch.float64))
    return points_to_map(warped, valid, shape)


def points_to_map(points: torch.Tensor, valid: torch.Tensor, shape: Tuple[int, int]) -> torch.Tensor:
    """Rasterise padded ``(B, N, 2)`` xy points to ``(B, H, W)`` float32 maps (1 at each point)."""
    height, width = shape
    b = points.shape[0]
    xy = torch.round(points).long()
    inside = valid & (xy[..., 0] >= 0) & (xy[..., 0] < width) & (xy[..., 1] >= 0) & (xy[..., 1] < height)
    # padding and points outside go to one extra "discard" slot: fixed shapes, no host sync on CUDA
    flat = torch.where(inside, xy[..., 1] * width + xy[..., 0], torch.full_like(xy[..., 0], height * width))
    out = torch.zeros(b, height * width + 1, device=points.device)
    out.scatter_(1, flat, 1.0)
    return out[:, :-1].reshape(b, height, width)
