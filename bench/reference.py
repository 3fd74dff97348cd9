"""The plain reference extractor the speed targets are measured against (issue 7).

Deliberately straightforward, as a first implementation would be: the eager float32 NCHW network
(no layout, precision or graph tricks) and a greedy NMS in numpy (sort candidates by score, keep
each one not yet suppressed, suppress its square neighbourhood). Output follows the package's
conventions (xy pixels at pixel centres, scores sorted descending, L2-normalised descriptors) so
its keypoints can be compared with the optimised extractor's.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from superpoint_ros.extractor import Features, pad_to_cell
from superpoint_ros.image import to_grayscale_float
from superpoint_ros.keypoints import sample_descriptors
from superpoint_ros.model import CELL, SuperPointNet


def greedy_nms(heatmap: np.ndarray, radius: int, threshold: float, border: int
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Greedy NMS of an ``(H, W)`` score map.

    Candidates are the pixels above ``threshold`` and at least ``border`` px inside; visited from
    the best score down, each one not yet suppressed is kept and suppresses every pixel within
    ``radius`` (square window). Returns ``(keypoints (N, 2) int xy, scores (N,))`` best first.
    """
    h, w = heatmap.shape
    ys, xs = np.nonzero(heatmap > threshold)
    inside = (ys >= border) & (ys < h - border) & (xs >= border) & (xs < w - border)
    ys, xs = ys[inside], xs[inside]
    scores = heatmap[ys, xs]
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros((h + 2 * radius, w + 2 * radius), dtype=bool)  # padded: no edge checks
    kept = []
    for i in order:
        y, x = ys[i], xs[i]
        if suppressed[y + radius, x + radius]:
            continue
        kept.append(i)
        suppressed[y:y + 2 * radius + 1, x:x + 2 * radius + 1] = True
    kept = np.asarray(kept, dtype=np.int64)
    return np.stack([xs[kept], ys[kept]], axis=1), scores[kept]


class ReferenceExtractor:
    """Baseline: eager float32 NCHW SuperPoint on the CPU (or a given device) + greedy NMS."""

    def __init__(self, model: SuperPointNet, device: str = "cpu", nms_radius: int = 4,
                 detection_threshold: float = 0.005, max_keypoints: Optional[int] = 1000, remove_borders: int = 4):
        self.device = torch.device(device)
        self.model = SuperPointNet(model.config).eval()
        self.model.load_state_dict({k: v.detach().float().cpu() for k, v in model.state_dict().items()})
        self.model.to(self.device)
        self.nms_radius, self.threshold = nms_radius, detection_threshold
        self.max_keypoints, self.border = max_keypoints, remove_borders

    @torch.inference_mode()
    def forward(self, gray: np.ndarray) -> dict:
        batch = torch.from_numpy(gray)[None, None].to(self.device)
        return self.model(pad_to_cell(batch))

    @torch.inference_mode()
    def decode(self, outputs: dict, image_size: Tuple[int, int]) -> Features:
        h, w = image_size
        prob = torch.softmax(outputs["logits"].float(), dim=1)[:, :-1]
        heatmap = F.pixel_shuffle(prob, CELL)[0, 0, :h, :w].cpu().numpy()
        keypoints, scores = greedy_nms(heatmap, self.nms_radius, self.threshold, self.border)
        if self.max_keypoints is not None and self.max_keypoints >= 0:
            keypoints, scores = keypoints[:self.max_keypoints], scores[:self.max_keypoints]
        points = torch.from_numpy(keypoints.astype(np.float32)).to(self.device)
        descriptors = sample_descriptors(outputs["descriptors"][0], points)
        return Features(keypoints.astype(np.float32), scores.astype(np.float32),
                        descriptors.cpu().numpy(), (h, w))

    def __call__(self, image: np.ndarray) -> Features:
        gray = to_grayscale_float(image)
        return self.decode(self.forward(gray), gray.shape)
