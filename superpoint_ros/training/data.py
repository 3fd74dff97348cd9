"""Datasets for the trainers and the real-photo training set.

Datasets here map a *position* (the global sample counter of a run) to an item, so the data of any
step are known without replaying the run (see ``engine``). Randomness per item is drawn from
``numpy.random.default_rng([seed, position, purpose])``.

Real photos: scikit-image's bundled images (always available offline with ``pip install
scikit-image``) and, when installed, Debian's ``opencv-doc`` sample images. Standard evaluation
images (graf, leuven, boat, ...) and the photos reserved for this project's evaluation set are
never used for training. ``python -m superpoint_ros.training.data --out DIR`` writes a folder of
grayscale training crops (PNG) from them.
"""
from __future__ import annotations

import argparse
import gzip
from pathlib import Path
from typing import List, Sequence, Tuple

import cv2
import numpy as np
import torch

# the train/eval split of the offline photos is defined once, for training and evaluation alike
from ..data_splits import OPENCV_DOC_DIR, SKIMAGE_EVAL, SKIMAGE_TRAIN, split_of
from .homographies import HomographyParams, sample_homography
from .synthetic_shapes import pack_item

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff")


def skimage_photos(names: Sequence[str] = SKIMAGE_TRAIN) -> List[Path]:
    """Paths of the bundled scikit-image photos with these names (those present)."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    found = []
    for name in names:
        if name in SKIMAGE_EVAL:
            raise ValueError(f"skimage image {name!r} is held out for evaluation")
        found.extend(p for p in sorted(folder.glob(f"{name}.*")) if p.suffix.lower() in IMAGE_SUFFIXES)
    return found


def is_evaluation_image(path: Path) -> bool:
    """True for photos reserved for evaluation (never trained on): see superpoint_ros.data_splits."""
    return split_of(Path(path).name) == "eval"


def opencv_doc_photos(folder: Path = OPENCV_DOC_DIR) -> List[Path]:
    """opencv-doc sample images (plain or .gz), minus standard evaluation images. Empty if absent."""
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.iterdir()):
        stem = p.name[:-3] if p.name.endswith(".gz") else p.name
        if Path(stem).suffix.lower() in IMAGE_SUFFIXES and not is_evaluation_image(Path(stem)):
            out.append(p)
    return out


def read_gray(path: Path) -> np.ndarray:
    """Read any supported image (also gzipped) as ``(H, W)`` uint8."""
    path = Path(path)
    if path.name.endswith(".gz"):
        buf = np.frombuffer(gzip.decompress(path.read_bytes()), np.uint8)
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    else:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    if image.ndim == 3:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return image


def random_crops(image: np.ndarray, rng: np.random.Generator, count: int, size: Tuple[int, int],
                 scale_range=(0.35, 1.0)) -> List[np.ndarray]:
    """``count`` crops with the aspect of ``size`` (H, W) covering ``scale_range`` of the largest
    such crop, resized to ``size`` (INTER_AREA, so no aliasing)."""
    h, w = image.shape
    th, tw = size
    largest = min(h / th, w / tw)  # the largest crop with the target aspect, in units of `size`
    crops = []
    for _ in range(count):
        s = largest * rng.uniform(*scale_range)
        ch, cw = max(8, int(round(th * s))), max(8, int(round(tw * s)))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = image[y:y + ch, x:x + cw]
        interp = cv2.INTER_AREA if ch >= th else cv2.INTER_LINEAR
        crops.append(cv2.resize(crop, (tw, th), interpolation=interp))
    return crops


def write_training_crops(sources: Sequence[Path], out_dir, size: Tuple[int, int], crops_per_image: int,
                         seed: int = 0, scale_range=(0.35, 1.0)) -> List[Path]:
    """Write ``crops_per_image`` crops of every source as ``out_dir/<stem>_<k>.png``; deterministic."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, src in enumerate(sources):
        if is_evaluation_image(Path(src)):
            raise ValueError(f"{src} is a standard evaluation image and must not be used for training")
        image = read_gray(src)
        stem = Path(src).name.split(".")[0]
        rng = np.random.default_rng([seed, i])
        for k, crop in enumerate(random_crops(image, rng, crops_per_image, size, scale_range)):
            path = out / f"{stem}_{k:03d}.png"
            cv2.imwrite(str(path), crop)
            written.append(path)
    return written


def list_images(folder) -> List[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


class WithHomographies(torch.utils.data.Dataset):
    """Adds ``count`` random homographies (``(count, 3, 3)`` float64) to each item of ``dataset``;
    sampled in the DataLoader workers so the GPU never waits for them."""

    def __init__(self, dataset, params: HomographyParams, seed: int, count: int, shape: Tuple[int, int]):
        self.dataset, self.params, self.seed, self.count, self.shape = dataset, params, seed, count, shape

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> dict:
        item = self.dataset[position]
        rng = np.random.default_rng([self.seed, position, 1])
        homographies = np.stack([sample_homography(rng, self.shape, self.params) for _ in range(self.count)])
        return {**item, "homography": torch.from_numpy(homographies)}


class LabelledImages(torch.utils.data.Dataset):
    """Images with pseudo ground-truth points from ``superpoint-adapt``, visited epoch by epoch in a
    shuffled order that depends only on ``(seed, epoch)``.

    ``label_dir`` holds ``<image stem>.npy`` (``(N, 2)`` float32 xy) for each image of ``image_dir``;
    images without labels are skipped. Items as in ``SyntheticShapes``.
    """

    def __init__(self, image_dir, label_dir, max_points: int = 512, seed: int = 0, epoch_length: int = 10 ** 9):
        label_dir = Path(label_dir)
        images = list_images(image_dir)
        self.items = [(p, label_dir / f"{p.stem}.npy") for p in images if (label_dir / f"{p.stem}.npy").is_file()]
        if not self.items:
            raise FileNotFoundError(f"no image in {image_dir} has a label in {label_dir}")
        self.max_points, self.seed, self.epoch_length = max_points, seed, epoch_length
        self._orders = {}
        self.shape = read_gray(self.items[0][0]).shape

    def __len__(self) -> int:
        return self.epoch_length

    def order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch, 2]).permutation(len(self.items))}
        return self._orders[epoch]

    def __getitem__(self, position: int) -> dict:
        epoch, i = divmod(int(position), len(self.items))
        image_path, label_path = self.items[self.order(epoch)[i]]
        image = read_gray(image_path)
        if image.shape[0] % 8 or image.shape[1] % 8:
            raise ValueError(f"{image_path}: size {image.shape} is not a multiple of 8")
        if self.shape is not None and image.shape != self.shape:
            raise ValueError(f"{image_path}: size {image.shape} differs from {self.shape}; training batches "
                             "need images of one size (use the crops of superpoint_ros.training.data)")
        points = np.load(label_path).astype(np.float32).reshape(-1, 2)
        return pack_item(image, points, self.max_points)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Write grayscale training crops of the offline real photos.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--crops-per-image", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--opencv-doc", action="store_true", help="also use Debian opencv-doc images if present")
    parser.add_argument("--max-images", type=int, default=None, help="use only the first N photos (smoke runs)")
    args = parser.parse_args(argv)
    sources = skimage_photos()
    if args.opencv_doc:
        sources += opencv_doc_photos()
    sources = sources[:args.max_images] if args.max_images else sources
    written = write_training_crops(sources, args.out, (args.height, args.width), args.crops_per_image, args.seed)
    print(f"wrote {len(written)} crops of {len(sources)} photos to {args.out}")
    (Path(args.out) / "SOURCES.txt").write_text("".join(f"{p}\n" for p in sources))


if __name__ == "__main__":
    main()
