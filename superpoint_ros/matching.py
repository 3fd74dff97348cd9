"""Descriptor matching on the descriptors' own device (CPU or CUDA)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch

from .backends import single_threaded_torch

Array = Union[np.ndarray, torch.Tensor]


@dataclass
class Matches:
    """``indices``: ``(M, 2)`` int64 rows ``(index in set 0, index in set 1)``;
    ``distances``: ``(M,)`` float32 Euclidean distances between the L2-normalised descriptors."""

    indices: np.ndarray
    distances: np.ndarray

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def _as_tensor(x: Array) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x


def mutual_nn_match_tensors(desc0: torch.Tensor, desc1: torch.Tensor, ratio_test: Optional[float] = None,
                            max_distance: Optional[float] = None):
    """Torch core of :func:`match_descriptors`; returns ``(indices (M, 2) long, distances (M,) float)``
    on the input device."""
    device = desc0.device
    if desc0.ndim != 2 or desc1.ndim != 2 or desc0.shape[1] != desc1.shape[1]:
        raise ValueError(f"descriptor sets must be (N, D) and (M, D), got {tuple(desc0.shape)} and {tuple(desc1.shape)}")
    if desc0.shape[0] == 0 or desc1.shape[0] == 0:
        return torch.zeros((0, 2), dtype=torch.long, device=device), torch.zeros(0, device=device)
    sim = desc0.float() @ desc1.float().t()
    best0 = sim.max(dim=1)
    best1_index = sim.argmax(dim=0)
    index0 = torch.arange(desc0.shape[0], device=device)
    keep = best1_index[best0.indices] == index0
    # unit vectors: |a - b|^2 = 2 - 2 a.b
    distance = torch.sqrt(torch.clamp(2.0 - 2.0 * best0.values, min=0.0))
    if ratio_test is not None and desc1.shape[0] > 1:
        second = sim.topk(2, dim=1).values[:, 1]
        second_distance = torch.sqrt(torch.clamp(2.0 - 2.0 * second, min=0.0))
        keep &= distance < ratio_test * second_distance
    if max_distance is not None:
        keep &= distance <= max_distance
    indices = torch.stack([index0[keep], best0.indices[keep]], dim=1)
    return indices, distance[keep]


def match_descriptors(desc0: Array, desc1: Array, ratio_test: Optional[float] = None,
                      max_distance: Optional[float] = None) -> Matches:
    """Mutual nearest-neighbour matching of two L2-normalised descriptor sets.

    ``desc0``: ``(N, D)``, ``desc1``: ``(M, D)``, numpy or torch (computed on that tensor's device).
    ``ratio_test``: keep a match only if its distance is below ``ratio_test`` times the distance to
    the second-nearest neighbour (Lowe's test); ``max_distance``: keep distances ``<=`` this.
    """
    desc0, desc1 = _as_tensor(desc0), _as_tensor(desc1)
    with single_threaded_torch(desc0.device):  # small ops: one CPU thread is faster on busy cores
        indices, distances = mutual_nn_match_tensors(desc0, desc1, ratio_test, max_distance)
    return Matches(indices.cpu().numpy().astype(np.int64), distances.float().cpu().numpy())
