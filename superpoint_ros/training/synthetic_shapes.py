"""Procedural synthetic shapes with exact ground-truth interest points (``superpoint-synth``).

Each scene is a noisy, blurred background with one kind of primitive drawn on it: lines,
polygons, multiple polygons, cubes, stars, checkerboards, stripes, ellipses (no points) or plain
noise (no points). Vertices are drawn at integer pixel positions, so a ground-truth point is
exactly the pixel where the drawn corner is (pixel-centre convention, xy order). Points covered by
a later-drawn shape are removed, so every label is a visible corner.

Scenes are a pure function of ``(seed, index)``: the dataset is reproducible, needs no disk, and a
training run can resume in the middle of an epoch with the exact same data.

CLI: ``superpoint-synth --config config/train/synthetic_shapes.yaml --out DIR --num 1000`` dumps
``DIR/{index:07d}.png`` and ``DIR/{index:07d}.npy`` (``(N, 2)`` float32 xy points).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .config import load_config
from .distributed import group_from_env

default_conf = {
    "height": 120,
    "width": 160,
    "seed": 0,
    "max_points": 128,        # labels are padded to this many points for batching
    "primitives": {           # relative frequency of each scene kind
        "lines": 1.0, "polygon": 1.0, "multiple_polygons": 1.0, "cube": 1.0, "star": 1.0,
        "checkerboard": 1.0, "stripes": 1.0, "ellipses": 0.5, "noise": 0.2,
    },
    "blur_sigma": [0.0, 1.2],  # final Gaussian blur, sigma range in px
    "noise_std": [0.0, 8.0],   # final additive Gaussian noise, grey levels
}

Points = np.ndarray  # (N, 2) float32 xy


# ---------------------------------------------------------------------------------- helpers
def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random background: a blurred noise field plus a few soft blobs, uint8."""
    level = rng.integers(0, 256)
    field = rng.normal(level, rng.uniform(10, 50), size=(h, w)).astype(np.float32)
    field = cv2.GaussianBlur(field, (0, 0), sigmaX=rng.uniform(2, 6))
    for _ in range(rng.integers(0, 4)):
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(w // 8, w // 2)), int(rng.integers(h // 8, h // 2)))
        cv2.ellipse(field, center, axes, float(rng.uniform(0, 180)), 0, 360, float(rng.integers(0, 256)), -1)
    field = cv2.GaussianBlur(field, (0, 0), sigmaX=rng.uniform(4, 10))
    return np.clip(field, 0, 255)


def _contrasting(rng: np.random.Generator, reference, min_diff: float = 50.0) -> float:
    """A grey level at least ``min_diff`` away from every value in ``reference`` (a number or an
    array of the background under the shape's corners); the farthest level if none is."""
    reference = np.atleast_1d(np.asarray(reference, dtype=np.float64)).ravel()
    levels = np.arange(256)
    gap = np.abs(levels[:, None] - reference[None]).min(axis=1)
    choices = levels[gap >= min_diff]
    return float(rng.choice(choices)) if len(choices) else float(levels[np.argmax(gap)])


def _under(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Image values at (clipped) integer xy points."""
    points = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    return image[points[:, 1].clip(0, image.shape[0] - 1), points[:, 0].clip(0, image.shape[1] - 1)]


def _random_point(rng, h, w, margin=0) -> np.ndarray:
    return np.array([rng.integers(margin, w - margin), rng.integers(margin, h - margin)], dtype=np.int64)


def _segments_intersect(p1, p2, p3, p4) -> bool:
    def orient(a, b, c):
        return np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
    return orient(p1, p2, p3) != orient(p1, p2, p4) and orient(p3, p4, p1) != orient(p3, p4, p2)


def _interior_angles_ok(poly: np.ndarray, min_deg: float = 20.0, max_deg: float = 160.0) -> bool:
    """Reject needle-sharp and almost-flat vertices: neither is a well-defined corner."""
    n = len(poly)
    for i in range(n):
        a, b, c = poly[i - 1], poly[i], poly[(i + 1) % n]
        v1, v2 = a - b, c - b
        cos = np.dot(v1, v2) / (np.linalg.norm(v1) * np.linalg.norm(v2) + 1e-9)
        angle = math.degrees(math.acos(np.clip(cos, -1, 1)))
        if not (min_deg <= angle <= max_deg):
            return False
    return True


def _random_convex_polygon(rng, h, w, n_min=3, n_max=5, radius_range=(0.1, 0.3)):
    """Vertices of a random convex polygon (int64 (N, 2) xy) or None if this draw was degenerate."""
    n = int(rng.integers(n_min, n_max + 1))
    radius = rng.uniform(*radius_range) * min(h, w)
    center = rng.uniform([radius, radius], [w - radius, h - radius])
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    poly = np.round(center + radius * np.stack([np.cos(angles), np.sin(angles)], -1)).astype(np.int64)
    if len(np.unique(poly, axis=0)) < n or not _interior_angles_ok(poly.astype(np.float64)):
        return None
    return poly


class _Canvas:
    """An image being drawn, with the ground-truth points of what is visible on it."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.points: List[np.ndarray] = []

    def add(self, mask_draw: Callable[[np.ndarray], None], image_draw: Callable[[np.ndarray], None],
            points: np.ndarray) -> None:
        """Draw a shape; first drop earlier points that the new shape covers (dilated by 1 px)."""
        mask = np.zeros(self.image.shape, np.uint8)
        mask_draw(mask)
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
        h, w = mask.shape
        self.points = [p for p in self.points if not (0 <= p[0] < w and 0 <= p[1] < h) or not mask[p[1], p[0]]]
        image_draw(self.image)
        self.points.extend(np.asarray(points, dtype=np.int64).reshape(-1, 2))

    def result(self, min_contrast: float = 25.0) -> Tuple[np.ndarray, Points]:
        """The image and its visible points: inside the image and not in a flat region (a 5x5
        window spanning less than ``min_contrast`` grey levels, e.g. the filled-in hub of a star
        with thick rays, is no corner)."""
        h, w = self.image.shape
        pts = np.array(self.points, dtype=np.int64).reshape(-1, 2)
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        pts = pts[inside]
        kernel = np.ones((5, 5), np.uint8)
        spread = cv2.dilate(self.image, kernel) - cv2.erode(self.image, kernel)
        visible = spread[pts[:, 1], pts[:, 0]] >= min_contrast
        return self.image, np.unique(pts[visible], axis=0).astype(np.float32)


# ---------------------------------------------------------------------------------- primitives
def draw_lines(rng, canvas: _Canvas) -> None:
    h, w = canvas.image.shape
    segments = []
    for _ in range(int(rng.integers(1, 6))):
        for _attempt in range(20):
            p1, p2 = _random_point(rng, h, w, 2), _random_point(rng, h, w, 2)
            if np.linalg.norm(p1 - p2) < 0.15 * min(h, w):
                continue
            if any(_segments_intersect(p1, p2, a, b) for a, b in segments):
                continue
            segments.append((p1, p2))
            colour = _contrasting(rng, _under(canvas.image, np.stack([p1, p2])))
            thickness = int(rng.integers(1, 4))

            def draw(img, c=colour, a=p1, b=p2, t=thickness):
                cv2.line(img, tuple(map(int, a)), tuple(map(int, b)), c, t)
            canvas.add(lambda m, a=p1, b=p2, t=thickness: cv2.line(m, tuple(map(int, a)), tuple(map(int, b)), 1, t),
                       draw, np.stack([p1, p2]))
            break


def _draw_polygon(rng, canvas: _Canvas, poly: np.ndarray) -> None:
    colour = _contrasting(rng, _under(canvas.image, poly))
    canvas.add(lambda m: cv2.fillPoly(m, [poly.astype(np.int32)], 1),
               lambda img: cv2.fillPoly(img, [poly.astype(np.int32)], colour), poly)


def draw_polygon(rng, canvas: _Canvas) -> None:
    h, w = canvas.image.shape
    for _ in range(20):
        poly = _random_convex_polygon(rng, h, w, radius_range=(0.15, 0.4))
        if poly is not None:
            _draw_polygon(rng, canvas, poly)
            return


def draw_multiple_polygons(rng, canvas: _Canvas) -> None:
    """Several small polygons that do not overlap (so every vertex stays a clean corner)."""
    h, w = canvas.image.shape
    occupied = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        for _attempt in range(20):
            poly = _random_convex_polygon(rng, h, w, radius_range=(0.08, 0.2))
            if poly is None:
                continue
            mask = np.zeros((h, w), np.uint8)
            cv2.fillPoly(mask, [poly.astype(np.int32)], 1)
            if (cv2.dilate(mask, np.ones((5, 5), np.uint8)) & occupied).any():
                continue
            occupied |= mask
            _draw_polygon(rng, canvas, poly)
            break


def draw_cube(rng, canvas: _Canvas) -> None:
    """Three visible faces of a box: 7 vertices (the hexagon outline and the near corner)."""
    for _ in range(10):
        if _try_cube(rng, canvas):
            return


def _try_cube(rng, canvas: _Canvas) -> bool:
    h, w = canvas.image.shape
    size = rng.uniform(0.2, 0.35) * min(h, w)
    base = rng.uniform(0, 2 * np.pi)
    angles = base + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.25, 0.25, 3)
    lengths = size * rng.uniform(0.6, 1.2, 3)
    edges = np.stack([np.cos(angles), np.sin(angles)], -1) * lengths[:, None]
    reach = np.abs(edges).sum(0)
    center = rng.uniform(reach, [w - 1 - reach[0], h - 1 - reach[1]]) if np.all(reach * 2 < [w - 1, h - 1]) else None
    if center is None:
        return False
    v = [np.round(center + e).astype(np.int64) for e in ([0, 0], *edges, edges[0] + edges[1],
                                                         edges[1] + edges[2], edges[0] + edges[2])]
    faces = [(0, 1, 4, 2), (0, 2, 5, 3), (0, 3, 6, 1)]
    under = _under(canvas.image, np.stack(v))
    colours = [_contrasting(rng, under)]
    for _ in range(2):  # each face distinct from the background and from the other faces
        colours.append(_contrasting(rng, np.append(under, colours), 35))
    outline = np.stack([v[1], v[4], v[2], v[5], v[3], v[6]])
    edges_out = np.roll(outline, -1, 0) - outline
    turn = edges_out[:, 0] * np.roll(edges_out, -1, 0)[:, 1] - edges_out[:, 1] * np.roll(edges_out, -1, 0)[:, 0]
    if not (np.all(turn > 0) or np.all(turn < 0)) or not _interior_angles_ok(outline.astype(np.float64), 20, 170):
        return False  # the three faces must tile a convex hexagon, or faces overlap and make spurious corners

    def draw(img):
        for face, colour in zip(faces, colours):
            cv2.fillPoly(img, [np.stack([v[i] for i in face]).astype(np.int32)], colour)
    canvas.add(lambda m: cv2.fillPoly(m, [outline.astype(np.int32)], 1), draw, np.stack(v))
    return True


def draw_star(rng, canvas: _Canvas) -> None:
    """Rays from a centre: the centre and every ray end are corners."""
    h, w = canvas.image.shape
    for _ in range(20):
        n = int(rng.integers(3, 7))
        radius = rng.uniform(0.2, 0.4) * min(h, w)
        center = np.round(rng.uniform([radius, radius], [w - 1 - radius, h - 1 - radius])).astype(np.int64)
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        if np.min(np.diff(np.append(angles, angles[0] + 2 * np.pi))) >= np.deg2rad(25):
            break  # rays too close together merge into one blob near the centre
    else:
        return
    lengths = radius * rng.uniform(0.5, 1.0, n)
    ends = np.round(center + lengths[:, None] * np.stack([np.cos(angles), np.sin(angles)], -1)).astype(np.int64)
    colour = _contrasting(rng, _under(canvas.image, np.concatenate([center[None], ends])))
    thickness = int(rng.integers(1, 4))

    def draw(img, value=colour):
        for end in ends:
            cv2.line(img, tuple(map(int, center)), tuple(map(int, end)), value, thickness)
    canvas.add(lambda m: draw(m, 1), draw, np.concatenate([center[None], ends]))


def _grid_scene(rng, canvas: _Canvas, rows: int, cols: int, stripes: bool) -> None:
    """A checkerboard (or stripes) on a randomly warped grid; points are the grid vertices."""
    h, w = canvas.image.shape
    for _ in range(20):  # a random quad strictly inside the image (a clipped vertex is no corner)
        gw, gh = rng.uniform(0.4, 0.9) * w, rng.uniform(0.4, 0.9) * h
        x0, y0 = rng.uniform(0, w - 1 - gw), rng.uniform(0, h - 1 - gh)
        quad = np.array([[x0, y0], [x0 + gw, y0], [x0 + gw, y0 + gh], [x0, y0 + gh]])
        quad += rng.uniform(-0.12, 0.12, (4, 2)) * [gw, gh]
        if quad.min() >= 2 and np.all(quad.max(0) <= [w - 3, h - 3]):
            break
    else:
        return
    unit = np.array([[0, 0], [cols, 0], [cols, rows], [0, rows]], np.float32)
    homography = cv2.getPerspectiveTransform(unit, quad.astype(np.float32))
    gx, gy = np.meshgrid(np.arange(cols + 1), np.arange(rows + 1))
    grid = np.stack([gx, gy], -1).reshape(-1, 1, 2).astype(np.float32)
    vertices = np.round(cv2.perspectiveTransform(grid, homography).reshape(rows + 1, cols + 1, 2)).astype(np.int64)
    under = _under(canvas.image, vertices.reshape(-1, 2))
    c0 = _contrasting(rng, under)
    c1 = _contrasting(rng, np.append(under, c0), 50)  # distinct from the background and from c0
    cells = []
    for r in range(rows):
        for c in range(cols):
            quad_rc = np.stack([vertices[r, c], vertices[r, c + 1], vertices[r + 1, c + 1], vertices[r + 1, c]])
            colour = (c0 if c % 2 == 0 else c1) if stripes else (c0 if (r + c) % 2 == 0 else c1)
            cells.append((quad_rc, colour))
    outline = np.stack([vertices[0, 0], vertices[0, -1], vertices[-1, -1], vertices[-1, 0]])
    points = np.concatenate([vertices[0], vertices[-1]]) if stripes else vertices.reshape(-1, 2)

    def draw(img):
        for quad_rc, colour in cells:
            cv2.fillPoly(img, [quad_rc.astype(np.int32)], colour)
    canvas.add(lambda m: cv2.fillPoly(m, [outline.astype(np.int32)], 1), draw, points)


def draw_checkerboard(rng, canvas: _Canvas) -> None:
    _grid_scene(rng, canvas, int(rng.integers(2, 6)), int(rng.integers(2, 6)), stripes=False)


def draw_stripes(rng, canvas: _Canvas) -> None:
    _grid_scene(rng, canvas, 1, int(rng.integers(3, 9)), stripes=True)


def draw_ellipses(rng, canvas: _Canvas) -> None:
    """Smooth curves with no corners: teaches the detector what *not* to fire on."""
    h, w = canvas.image.shape
    for _ in range(int(rng.integers(1, 6))):
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(5, w // 4)), int(rng.integers(5, h // 4)))
        angle = float(rng.uniform(0, 180))
        colour = _contrasting(rng, float(canvas.image[center[1], center[0]]))
        canvas.add(lambda m, c=center, a=axes, t=angle: cv2.ellipse(m, c, a, t, 0, 360, 1, -1),
                   lambda img, c=center, a=axes, t=angle, v=colour: cv2.ellipse(img, c, a, t, 0, 360, v, -1),
                   np.zeros((0, 2)))


def draw_noise(rng, canvas: _Canvas) -> None:
    canvas.image[:] = rng.uniform(0, 255, canvas.image.shape)


PRIMITIVES: Dict[str, Callable] = {
    "lines": draw_lines, "polygon": draw_polygon, "multiple_polygons": draw_multiple_polygons,
    "cube": draw_cube, "star": draw_star, "checkerboard": draw_checkerboard, "stripes": draw_stripes,
    "ellipses": draw_ellipses, "noise": draw_noise,
}


def generate_scene(rng: np.random.Generator, primitive: str, height: int, width: int,
                   blur_sigma=(0.0, 1.2), noise_std=(0.0, 8.0)) -> Tuple[np.ndarray, Points]:
    """One scene: ``(image (H, W) uint8, points (N, 2) float32 xy)``."""
    if primitive not in PRIMITIVES:
        raise ValueError(f"unknown primitive {primitive!r}; choose from {sorted(PRIMITIVES)}")
    canvas = _Canvas(_background(rng, height, width))
    PRIMITIVES[primitive](rng, canvas)
    image, points = canvas.result()
    sigma = rng.uniform(*blur_sigma)
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma)
    image = image + rng.normal(0, rng.uniform(*noise_std), image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), points


class SyntheticShapes(torch.utils.data.Dataset):
    """Scene ``i`` is generated from ``seed`` and ``i`` alone (no state: safe in workers, resumable).

    Items: ``{"image": (1, H, W) float32 in [0, 1], "points": (max_points, 2) float32 xy,
    "valid": (max_points,) bool}``.
    """

    def __init__(self, conf: dict, length: int = 10 ** 9, offset: int = 0):
        self.conf = {**default_conf, **conf}
        names = list(self.conf["primitives"])
        weights = np.array([self.conf["primitives"][n] for n in names], dtype=np.float64)
        if not names or weights.min() < 0 or weights.sum() <= 0:
            raise ValueError(f"primitives need non-negative weights with a positive sum: {self.conf['primitives']}")
        self.names, self.weights = names, weights / weights.sum()
        self.length, self.offset = length, offset

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Tuple[np.ndarray, Points, str]:
        rng = np.random.default_rng([int(self.conf["seed"]), int(index) + self.offset])
        primitive = self.names[rng.choice(len(self.names), p=self.weights)]
        image, points = generate_scene(rng, primitive, self.conf["height"], self.conf["width"],
                                       self.conf["blur_sigma"], self.conf["noise_std"])
        return image, points, primitive

    def __getitem__(self, index: int) -> dict:
        image, points, _ = self.scene(index)
        return pack_item(image, points, self.conf["max_points"])


def pack_item(image: np.ndarray, points: Points, max_points: int) -> dict:
    """A uint8 image and its points as fixed-size tensors (points beyond max_points are dropped)."""
    padded = np.zeros((max_points, 2), np.float32)
    n = min(len(points), max_points)
    padded[:n] = points[:n]
    valid = np.zeros(max_points, bool)
    valid[:n] = True
    return {"image": torch.from_numpy(image.astype(np.float32) / 255.0)[None],
            "points": torch.from_numpy(padded), "valid": torch.from_numpy(valid)}


def worker_init(_worker_id: int) -> None:
    cv2.setNumThreads(1)  # DataLoader workers already run in parallel; nested threads only thrash
    torch.set_num_threads(1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML config (defaults: config/train/synthetic_shapes.yaml)")
    parser.add_argument("--out", required=True, help="output folder for PNG images and .npy points")
    parser.add_argument("--num", type=int, default=100, help="number of scenes to write")
    parser.add_argument("--start", type=int, default=0, help="index of the first scene")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args(argv)
    conf = load_config(default_conf, args.config, args.set)
    dataset = SyntheticShapes(conf)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts: Dict[str, int] = {}
    # under torchrun each process writes every WORLD_SIZE-th scene (scenes depend on their index only)
    group = group_from_env()
    indices = range(args.start + group.rank, args.start + args.num, group.world_size)
    for i in tqdm(indices, desc="synthetic shapes", unit="img", disable=not group.is_main):
        image, points, primitive = dataset.scene(i)
        cv2.imwrite(str(out / f"{i:07d}.png"), image)
        np.save(out / f"{i:07d}.npy", points)
        counts[primitive] = counts.get(primitive, 0) + 1
    print(f"wrote {len(indices)} scenes to {out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
