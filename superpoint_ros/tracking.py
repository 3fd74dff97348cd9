"""Persistent track IDs from frame-to-frame matches.

A track is one physical point seen in consecutive frames. Its ID (int64) is handed out once and
never reused, not even after :meth:`TrackTable.reset`, so a consumer can key a map on it. A track
lives while it keeps matching; with ``max_age > 0`` a track that was missed for up to ``max_age``
frames can be re-found by descriptor near its last position (``max_displacement`` px), subject to
the ``verify_refound`` check the caller passes to :meth:`TrackTable.update` (the Frontend's:
optical flow from the track's last image).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple

import numpy as np
import torch

from .matching import mutual_nn_match_tensors


@dataclass
class _Observed:
    """Tracks observed in one frame, row-aligned with that frame's keypoints."""

    ids: np.ndarray          # (N,) int64
    lengths: np.ndarray      # (N,) int32 frames the track has been observed in
    keypoints: np.ndarray    # (N, 2) float32 xy px
    descriptors: np.ndarray  # (N, D) float32


@dataclass
class _Lost:
    """Tracks not seen in the last frame(s) that may still be re-found."""

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    descriptors: Optional[np.ndarray] = None
    missed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    def __len__(self):
        return len(self.ids)


class TrackTable:
    """Track bookkeeping; the caller supplies matches (geometry already checked)."""

    def __init__(self, max_age: int = 0, max_displacement: float = 64.0):
        self.max_age = int(max_age)
        self.max_displacement = float(max_displacement)
        self._next_id = 0
        self._last: Optional[_Observed] = None
        self._lost = _Lost()

    def reset(self) -> None:
        """Forget every track (the ID counter keeps counting: IDs are never reused)."""
        self._last = None
        self._lost = _Lost()

    @property
    def next_id(self) -> int:
        return self._next_id

    @property
    def keypoints(self) -> Optional[np.ndarray]:
        """``(N, 2)`` float32 xy px of the last frame's keypoints as tracked: the input of
        :meth:`update`, with re-found tracks at the position its ``verify_refound`` gave them."""
        return None if self._last is None else self._last.keypoints

    def _new_ids(self, count: int) -> np.ndarray:
        ids = np.arange(self._next_id, self._next_id + count, dtype=np.int64)
        self._next_id += count
        return ids

    def update(self, keypoints: np.ndarray, descriptors: np.ndarray, matches: np.ndarray,
               ratio_test: Optional[float] = None, max_distance: Optional[float] = None,
               verify_refound: Optional[Callable[[np.ndarray, np.ndarray, np.ndarray],
                                                 Tuple[np.ndarray, np.ndarray]]] = None
               ) -> Tuple[np.ndarray, np.ndarray]:
        """Advance by one frame.

        ``keypoints``: ``(N, 2)`` xy px and ``descriptors``: ``(N, D)`` of the new frame;
        ``matches``: ``(K, 2)`` int rows ``(index in previous frame, index in new frame)``, the
        accepted temporal matches (ignored when there is no previous frame).
        ``verify_refound(frames_ago (K,) int, last_xy (K, 2), candidate_xy (K, 2)) -> (ok (K,)
        bool, xy (K, 2))``: an optional check of each lost track re-found by descriptor on a new
        keypoint (e.g. optical flow from the image it was last seen in). Rejected candidates stay
        lost; accepted ones take position ``xy`` (see :attr:`keypoints`). xy in px.
        Returns ``(track_ids (N,) int64, track_lengths (N,) int32)``.
        """
        n = len(keypoints)
        ids = np.full(n, -1, dtype=np.int64)
        lengths = np.ones(n, dtype=np.int32)
        if self._last is not None and len(matches):
            prev, curr = matches[:, 0], matches[:, 1]
            ids[curr] = self._last.ids[prev]
            lengths[curr] = self._last.lengths[prev] + 1
        self._age_lost_tracks(matches)
        positions = np.asarray(keypoints, np.float32)
        if len(self._lost) and (ids < 0).any():
            positions = self._refind(positions, descriptors, ids, lengths, ratio_test, max_distance, verify_refound)
        unassigned = ids < 0
        ids[unassigned] = self._new_ids(int(unassigned.sum()))
        self._last = _Observed(ids, lengths, positions, np.asarray(descriptors, np.float32))
        return ids, lengths

    def _age_lost_tracks(self, matches: np.ndarray) -> None:
        """Previous frame's unmatched tracks join the lost pool; pool entries past max_age go."""
        if self.max_age <= 0 or self._last is None:
            self._lost = _Lost()
            return
        continued = np.zeros(len(self._last.ids), dtype=bool)
        if len(matches):
            continued[matches[:, 0]] = True
        lost, last = self._lost, self._last
        gone = ~continued
        desc_parts = [d for d in (lost.descriptors, last.descriptors[gone]) if d is not None]
        pool = _Lost(
            ids=np.concatenate([lost.ids, last.ids[gone]]),
            lengths=np.concatenate([lost.lengths, last.lengths[gone]]),
            keypoints=np.concatenate([lost.keypoints, last.keypoints[gone]]),
            descriptors=np.concatenate(desc_parts) if desc_parts else None,
            missed=np.concatenate([lost.missed + 1, np.ones(int(gone.sum()), np.int32)]),
        )
        alive = pool.missed <= self.max_age
        self._lost = _Lost(pool.ids[alive], pool.lengths[alive], pool.keypoints[alive],
                           None if pool.descriptors is None else pool.descriptors[alive], pool.missed[alive])

    def _refind(self, keypoints, descriptors, ids, lengths, ratio_test, max_distance, verify_refound) -> np.ndarray:
        """Assign lost tracks to unassigned keypoints (``ids``/``lengths`` in place); returns the
        keypoints with the accepted ones at their verified positions."""
        free = np.flatnonzero(ids < 0)
        lost = self._lost
        near = torch.cdist(torch.as_tensor(lost.keypoints), torch.as_tensor(keypoints[free])) <= self.max_displacement
        pairs, _ = mutual_nn_match_tensors(torch.as_tensor(lost.descriptors), torch.as_tensor(
            np.asarray(descriptors, np.float32)[free]), ratio_test, max_distance, allowed=near)
        pairs = pairs.numpy()
        if len(pairs) and verify_refound is not None:
            ok, verified_xy = verify_refound(lost.missed[pairs[:, 0]], lost.keypoints[pairs[:, 0]],
                                                  keypoints[free[pairs[:, 1]]])
            keypoints = keypoints.copy()
            keypoints[free[pairs[ok, 1]]] = verified_xy[ok]
            pairs = pairs[ok]
        if len(pairs) == 0:
            return keypoints
        target = free[pairs[:, 1]]
        ids[target] = lost.ids[pairs[:, 0]]
        lengths[target] = lost.lengths[pairs[:, 0]] + 1
        keep = np.ones(len(lost), dtype=bool)
        keep[pairs[:, 0]] = False
        self._lost = _Lost(lost.ids[keep], lost.lengths[keep], lost.keypoints[keep],
                           lost.descriptors[keep], lost.missed[keep])
        return keypoints
