"""Descriptor matching on the descriptors' own device (CPU or CUDA): the package's one mutual
nearest-neighbour matcher, used for temporal matches, rectified stereo and re-finding lost tracks.

Which pairs may match is given either as an ``(N, M)`` bool mask (``allowed``: every similarity is
computed, then masked) or as a list of candidate pairs (``candidates``: only those similarities are
computed, e.g. the few right keypoints near a left keypoint's row in rectified stereo). Both give
the same matches: nearest neighbours among the allowed pairs, ties to the lower index, the ratio
test against the second-best allowed candidate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]

#: Similarity given to pairs outside the ``allowed`` mask: below any real one (unit vectors: >= -1).
_EXCLUDED = -4.0


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


def check_match_options(ratio_test: Optional[float], max_distance: Optional[float]) -> None:
    """Raise ``ValueError`` for options outside their range; ``None`` switches an option off.

    ``ratio_test`` must lie in ``(0, 1]`` (0 would reject every match, above 1 accepts matches
    farther than their runner-up); ``max_distance`` must be ``>= 0``.
    """
    if ratio_test is not None and not 0.0 < float(ratio_test) <= 1.0:
        raise ValueError(f"ratio_test must be in (0, 1] or None (off), got {ratio_test!r}")
    if max_distance is not None and not float(max_distance) >= 0.0:
        raise ValueError(f"max_distance must be >= 0 or None (off), got {max_distance!r}")


def _unit_distance(similarity: torch.Tensor) -> torch.Tensor:
    # unit vectors: |a - b|^2 = 2 - 2 a.b
    return torch.sqrt(torch.clamp(2.0 - 2.0 * similarity, min=0.0))


def mutual_nn_match_tensors(desc0: torch.Tensor, desc1: torch.Tensor, ratio_test: Optional[float] = None,
                            max_distance: Optional[float] = None, allowed: Optional[torch.Tensor] = None
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Torch core of :func:`match_descriptors` (same arguments, tensors on one device); returns
    ``(indices (K, 2) long, distances (K,) float32)`` on the input device."""
    check_match_options(ratio_test, max_distance)
    device = desc0.device
    if desc0.ndim != 2 or desc1.ndim != 2 or desc0.shape[1] != desc1.shape[1]:
        raise ValueError(f"descriptor sets must be (N, D) and (M, D), got {tuple(desc0.shape)} and {tuple(desc1.shape)}")
    n, m = desc0.shape[0], desc1.shape[0]
    if allowed is not None and (tuple(allowed.shape) != (n, m) or allowed.dtype != torch.bool):
        raise ValueError(f"allowed must be an ({n}, {m}) bool mask, got {tuple(allowed.shape)} {allowed.dtype}")
    if n == 0 or m == 0:
        return torch.zeros((0, 2), dtype=torch.long, device=device), torch.zeros(0, device=device)
    sim = desc0.float() @ desc1.float().t()
    if allowed is not None:
        sim = torch.where(allowed.to(device), sim, torch.full_like(sim, _EXCLUDED))
    best0_values, best0_index, best1_index = _best_entries(sim)
    index0 = torch.arange(n, device=device)
    keep = best1_index[best0_index] == index0
    if allowed is not None:  # a row without any allowed pair has no match
        keep &= best0_values > _EXCLUDED / 2
    second = None
    if ratio_test is not None and m > 1:
        # the runner-up: the row's maximum with its best entry set aside (= topk(2)'s second value,
        # ties included; measured 5x cheaper than topk at 500 x 500). sim is not needed after this.
        second = sim.scatter_(1, best0_index[:, None], float("-inf")).amax(dim=1)
    return _accepted_matches(index0, best0_index, best0_values, keep, second, ratio_test, max_distance)


def _accepted_matches(index0: torch.Tensor, best0_index: torch.Tensor, best0_values: torch.Tensor,
                      keep: torch.Tensor, second: Optional[torch.Tensor], ratio_test: Optional[float],
                      max_distance: Optional[float]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The matches ``(index0, best0_index)`` among the mutual ones (``keep``, ``(N,)`` bool) that
    pass the ratio test against each row's runner-up similarity ``second`` (``(N,)``; at most
    ``_EXCLUDED`` or ``-inf`` where a row has none: unambiguous, it passes; ``None``: no test) and
    ``max_distance`` -> ``(indices (K, 2) long, distances (K,) float32)``."""
    distance = _unit_distance(best0_values)
    if second is not None:
        second_distance = torch.where(second > _EXCLUDED / 2, _unit_distance(second),
                                      torch.full_like(second, float("inf")))
        keep = keep & (distance < float(ratio_test) * second_distance)
    if max_distance is not None:
        keep = keep & (distance <= float(max_distance))
    return torch.stack([index0[keep], best0_index[keep]], dim=1), distance[keep]


def _best_entries(sim: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(N, M)`` similarities -> ``(each row's maximum (N,), its column (N,) long, each column's
    best row (M,) long)``, ties to the lower index. On the CPU numpy's argmax does it on the same
    memory (exactly the same result; measured 0.25 + 0.40 ms with torch vs 0.03 + 0.11 ms at
    450 x 450, one thread)."""
    if sim.device.type != "cpu":
        best0 = sim.max(dim=1)
        return best0.values, best0.indices, sim.argmax(dim=0)
    array = sim.detach().numpy()
    best0_index = array.argmax(axis=1).astype(np.int64, copy=False)
    best0_values = np.take_along_axis(array, best0_index[:, None], axis=1)[:, 0]
    best1_index = array.argmax(axis=0).astype(np.int64, copy=False)
    return torch.from_numpy(best0_values), torch.from_numpy(best0_index), torch.from_numpy(best1_index)


def _segment_max(values: torch.Tensor, group: torch.Tensor, size: int) -> torch.Tensor:
    """``(size,)`` maximum of ``values`` per ``group`` index (``-inf`` for a group without any)."""
    out = torch.full((size,), float("-inf"), dtype=values.dtype, device=values.device)
    return out.scatter_reduce(0, group, values, "amax")


def _segment_argmax(values: torch.Tensor, group: torch.Tensor, other: torch.Tensor, size: int,
                    none: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per ``group`` index: ``(best value (size,), the lowest ``other`` index among the pairs with
    that value (size,) long, ``none`` for a group without any)`` -- a masked row's (or column's)
    ``max``/``argmax`` with ties to the lower index."""
    best = _segment_max(values, group, size)
    is_best = values == best[group]
    choice = torch.full((size,), none, dtype=torch.long, device=values.device)
    return best, choice.scatter_reduce(0, group[is_best], other[is_best], "amin")


def check_candidates(candidates: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """``(P, 2)`` integer pairs ``(index in set 0, index in set 1)`` -> the distinct pairs as a
    long tensor (duplicates would be their own runner-up in the ratio test); raises
    ``ValueError`` for another shape or an index out of range."""
    if candidates.ndim != 2 or candidates.shape[1] != 2 or candidates.dtype.is_floating_point or candidates.dtype == torch.bool:
        raise ValueError(f"candidates must be (P, 2) integer pairs, got {tuple(candidates.shape)} {candidates.dtype}")
    candidates = candidates.long()
    if len(candidates) and (candidates.min() < 0 or (candidates[:, 0] >= n).any() or (candidates[:, 1] >= m).any()):
        raise ValueError(f"candidates index outside the ({n}, {m}) descriptor sets")
    keys = torch.unique(candidates[:, 0] * m + candidates[:, 1])  # sorted: rows in (i, j) order
    return torch.stack([keys // m, keys % m], dim=1)


def mutual_nn_match_candidates(desc0: torch.Tensor, desc1: torch.Tensor, candidates: torch.Tensor,
                               ratio_test: Optional[float] = None, max_distance: Optional[float] = None
                               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`mutual_nn_match_tensors` with ``allowed`` given as candidate pairs: ``candidates``
    ``(P, 2)`` integer rows ``(index in desc0, index in desc1)`` (tensors on one device). Only
    those ``P`` similarities are computed (``P * D`` work instead of ``N * M * D``). Same
    matches as the dense mask holding exactly those pairs; returns ``(indices (K, 2) long,
    distances (K,) float32)``, rows in increasing index-0 order."""
    check_match_options(ratio_test, max_distance)
    device = desc0.device
    if desc0.ndim != 2 or desc1.ndim != 2 or desc0.shape[1] != desc1.shape[1]:
        raise ValueError(f"descriptor sets must be (N, D) and (M, D), got {tuple(desc0.shape)} and {tuple(desc1.shape)}")
    n, m = desc0.shape[0], desc1.shape[0]
    pairs = check_candidates(candidates.to(device), n, m)
    if n == 0 or m == 0 or len(pairs) == 0:
        return torch.zeros((0, 2), dtype=torch.long, device=device), torch.zeros(0, device=device)
    i, j = pairs[:, 0], pairs[:, 1]
    sim = (desc0.float()[i] * desc1.float()[j]).sum(dim=1)
    best0, best0_index = _segment_argmax(sim, i, j, n, none=m)
    _, best1_index = _segment_argmax(sim, j, i, m, none=n)
    index0 = torch.arange(n, device=device)
    has = best0_index < m  # a row without any candidate has no match
    keep = has & (best1_index[best0_index.clamp(max=m - 1)] == index0)
    second = None
    if ratio_test is not None:
        runner_up = j != best0_index[i]  # every candidate of the row but its best one
        second = _segment_max(sim[runner_up], i[runner_up], n)  # -inf: no second candidate
    return _accepted_matches(index0, best0_index, best0, keep, second, ratio_test, max_distance)


def match_descriptors(desc0: Array, desc1: Array, ratio_test: Optional[float] = None,
                      max_distance: Optional[float] = None, allowed: Optional[Array] = None,
                      candidates: Optional[Array] = None) -> Matches:
    """Mutual nearest-neighbour matching of two L2-normalised descriptor sets.

    ``desc0``: ``(N, D)``, ``desc1``: ``(M, D)``, numpy or torch (computed on that tensor's device).
    ``allowed``: optional ``(N, M)`` bool mask of the pairs that may match (e.g. rectified-stereo
    geometry); nearest neighbours are then taken among allowed pairs only. ``candidates``: the
    same as ``(P, 2)`` integer index pairs ``(i, j)`` instead of a mask (only their similarities are
    computed: cheaper when few pairs are allowed); at most one of ``allowed`` and ``candidates``.
    ``ratio_test``: in ``(0, 1]``; keep a match only if its distance is below ``ratio_test`` times
    the distance to the second-nearest (allowed) neighbour (Lowe's test; a match with no second
    allowed candidate passes). ``max_distance``: keep distances ``<=`` this. ``None`` = off.
    Ties go to the lower index. Raises ``ValueError`` on options out of range or mismatched shapes.
    """
    if allowed is not None and candidates is not None:
        raise ValueError("give allowed (a mask) or candidates (index pairs), not both")
    desc0, desc1 = _as_tensor(desc0), _as_tensor(desc1)
    if candidates is not None:
        indices, distances = mutual_nn_match_candidates(desc0, desc1, _as_tensor(candidates), ratio_test,
                                                        max_distance)
    else:
        mask = None if allowed is None else _as_tensor(allowed)
        indices, distances = mutual_nn_match_tensors(desc0, desc1, ratio_test, max_distance, mask)
    return Matches(indices.cpu().numpy().astype(np.int64), distances.float().cpu().numpy())
