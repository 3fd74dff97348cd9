"""Training losses: the detector's 65-way cross-entropy and the descriptor hinge loss.

Plain functions over tensors; shapes in the docstrings. Losses are computed in float32 even when
the network runs under fp16/bf16 autocast.

Means over a data-dependent number of terms (valid cells, positive/negative pairs) go through
``distributed.global_mean``: in a single process that is ``total / max(count, 1)``; under DDP the
count is summed over the ranks, so the averaged gradient is that of the global batch.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..model import CELL
from .distributed import global_mean
from .homographies import warp_points


def keypoint_map_to_labels(keypoint_map: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``(B, H, W)`` binary map -> ``(B, H/8, W/8)`` int64 class in 0..64 (64 = dustbin, no point).

    A cell with several points gets one of them at random (ties broken by small noise, as in the
    paper's reference code), so no location is systematically favoured.
    """
    cells = F.pixel_unshuffle(keypoint_map[:, None].float(), CELL)  # (B, 64, Hc, Wc)
    noise = torch.rand(cells.shape, generator=generator, device=cells.device) * 0.1
    scores = torch.cat([cells * 2 + noise, torch.ones_like(cells[:, :1])], dim=1)
    return scores.argmax(dim=1)


def detector_loss(logits: torch.Tensor, keypoint_map: torch.Tensor, valid_mask: Optional[torch.Tensor] = None,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Mean 65-way cross-entropy over valid cells.

    ``logits``: ``(B, 65, Hc, Wc)``; ``keypoint_map``: ``(B, 8Hc, 8Wc)`` in {0, 1}; ``valid_mask``:
    ``(B, 8Hc, 8Wc)`` (a cell counts only if all its pixels are valid). Returns a scalar.
    """
    labels = keypoint_map_to_labels(keypoint_map, generator)
    per_cell = F.cross_entropy(logits.float(), labels, reduction="none")
    if valid_mask is None:
        return per_cell.mean()
    cell_valid = F.pixel_unshuffle(valid_mask[:, None].float(), CELL).min(dim=1).values
    return global_mean((per_cell * cell_valid).sum(), cell_valid.sum())


def cell_centres(hc: int, wc: int, device=None) -> torch.Tensor:
    """``(Hc*Wc, 2)`` xy pixel coordinates of the coarse cell centres, row-major."""
    ys, xs = torch.meshgrid(torch.arange(hc, device=device), torch.arange(wc, device=device), indexing="ij")
    return torch.stack([xs, ys], -1).reshape(-1, 2).to(torch.float32) * CELL + (CELL - 1) / 2


def correspondence_matrix(homography: torch.Tensor, hc: int, wc: int, radius: float) -> torch.Tensor:
    """``(B, N, N)`` bool, ``N = Hc*Wc``: cell i of image 0, warped by ``homography`` (B, 3, 3),
    lands within ``radius`` px of cell j's centre in image 1."""
    centres = cell_centres(hc, wc, homography.device)
    warped = warp_points(homography, centres[None].expand(homography.shape[0], -1, -1))
    return _distances(warped, centres[None]) <= radius


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact pairwise Euclidean distances (cdist's matmul shortcut loses pixels at these magnitudes)."""
    return torch.cdist(a.float(), b.float(), compute_mode="donot_use_mm_for_euclid_dist")


def descriptor_loss(desc0: torch.Tensor, desc1: torch.Tensor, homography: torch.Tensor,
                    valid1: Optional[torch.Tensor] = None, positive_margin: float = 1.0,
                    negative_margin: float = 0.2, radius: float = CELL - 0.5) -> torch.Tensor:
    """Dense hinge loss over all cell pairs (the paper's descriptor loss).

    ``desc0, desc1``: ``(B, D, Hc, Wc)`` L2-normalised; ``homography``: ``(B, 3, 3)`` mapping image-0
    pixels to image-1 pixels; ``valid1``: ``(B, H, W)`` valid pixels of image 1. A pair (i, j) is
    positive when cell i's centre warps within ``radius`` px of cell j's centre; positives pay
    ``max(0, m_p - d_i.d_j)``, negatives ``max(0, d_i.d_j - m_n)``. The two terms are averaged
    separately (positives are ~1/N of the pairs), which plays the role of the paper's lambda_d.
    """
    b, d, hc, wc = desc0.shape
    positive = correspondence_matrix(homography, hc, wc, radius).float()
    dot = torch.einsum("bdn,bdm->bnm", desc0.float().reshape(b, d, -1), desc1.float().reshape(b, d, -1))
    weight = torch.ones_like(dot)
    if valid1 is not None:
        cell_valid = F.pixel_unshuffle(valid1[:, None].float(), CELL).min(dim=1).values.reshape(b, 1, -1)
        weight = weight * cell_valid
    pos = positive * weight
    neg = (1 - positive) * weight
    pos_loss = global_mean((F.relu(positive_margin - dot) * pos).sum(), pos.sum())
    neg_loss = global_mean((F.relu(dot - negative_margin) * neg).sum(), neg.sum())
    return pos_loss + neg_loss


def sparse_descriptor_loss(desc0: torch.Tensor, desc1: torch.Tensor, homography: torch.Tensor,
                           num_samples: int, generator: Optional[torch.Generator] = None,
                           positive_margin: float = 1.0, negative_margin: float = 0.2) -> torch.Tensor:
    """Memory-light variant: ``num_samples`` random cells of image 0 per image, each against every
    cell of image 1 (positives/negatives as in ``descriptor_loss``). Memory is O(S*N), not O(N^2)."""
    b, d, hc, wc = desc0.shape
    n = hc * wc
    # random distinct cells per image: argsort of uniform noise (works with a generator on any device)
    idx = torch.rand(b, n, generator=generator, device=desc0.device).argsort(dim=1)[:, :num_samples]
    centres = cell_centres(hc, wc, desc0.device)
    warped = warp_points(homography, centres[idx])  # (B, S, 2)
    positive = (_distances(warped, centres[None]) <= CELL - 0.5).float()
    d0 = torch.gather(desc0.float().reshape(b, d, n), 2, idx[:, None].expand(-1, d, -1))
    dot = torch.einsum("bds,bdm->bsm", d0, desc1.float().reshape(b, d, n))
    pos_loss = global_mean((F.relu(positive_margin - dot) * positive).sum(), positive.sum())
    neg_loss = global_mean((F.relu(dot - negative_margin) * (1 - positive)).sum(), (1 - positive).sum())
    return pos_loss + neg_loss
