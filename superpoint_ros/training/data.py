"""Datasets for the trainers and the real-photo training set.

Datasets here map a *position* (the global sample counter of a run) to an item, so the data of any
step are known without replaying the run (see ``engine``). Randomness per item is drawn from
``numpy.random.default_rng([seed, position, purpose])``.

Real photos: scikit-image's bundled images (always available offline with ``pip install
scikit-image``), when installed, Debian's ``opencv-doc`` sample images, and any folders of photos
(``--photos DIR ...``: jpg/jpeg/png, searched recursively). Standard evaluation images (graf,
leuven, boat, ...) and the photos reserved for this project's evaluation set are never used for
training; ``VALIDATION_PERCENT`` % of a folder's photos (``data_splits.folder_photo_split``) are a
validation split that training never sees (``--val-out`` writes their crops). A folder's
``MANIFEST.tsv`` (columns ``relpath repo commit source_path licence``), when present, gives each
photo's origin and licence; they go to ``OUT/SOURCES.json`` and from there into the checkpoint's
provenance. ``python -m superpoint_ros.training.data --out DIR`` writes a folder of grayscale
training crops (PNG) from them.
"""
from __future__ import annotations

import argparse
import collections
import csv
import gzip
import json
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

import cv2
import numpy as np
import torch

# the train/eval split of the offline photos is defined once, for training and evaluation alike
from ..data_splits import OPENCV_DOC_DIR, SKIMAGE_EVAL, SKIMAGE_TRAIN, folder_photo_split, split_of
from .homographies import HomographyParams, sample_homography
from .synthetic_shapes import pack_item

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff")
#: file types taken from a ``--photos`` folder
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
MANIFEST_NAME = "MANIFEST.tsv"


def skimage_photos(names: Sequence[str] = SKIMAGE_TRAIN) -> List[Path]:
    """Paths of the bundled scikit-image photos with these names (those present)."""
    import skimage  # optional (the eval/train extras): bundled photos

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


def is_reserved_for_evaluation(path: Path) -> bool:
    """True for a photo this project evaluates on: a built-in evaluation photo by name (also inside
    a user folder, ``data_splits.folder_photo_split``), or an opencv-doc image of the eval split."""
    path = Path(path)
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if folder_photo_split(name) == "eval":
        return True
    return path.parent.resolve() == OPENCV_DOC_DIR.resolve() and is_evaluation_image(Path(name))


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


def folder_photos(folder) -> List[Path]:
    """All jpg/jpeg/png files under ``folder`` (recursive), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"photo folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)


def read_manifest(folder) -> Dict[Path, dict]:
    """``folder/MANIFEST.tsv`` rows keyed by the resolved path of the photo they describe ({} if absent).

    A row's ``relpath`` may carry leading folders the copy lacks (``images/bsds500/x.jpg`` for
    ``folder/bsds500/x.jpg``): the longest suffix of it that exists under ``folder`` is used.
    """
    folder = Path(folder)
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return {}
    rows = {}
    with manifest.open(newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            parts = Path(row.get("relpath") or "").parts
            for k in range(len(parts)):
                candidate = folder.joinpath(*parts[k:])
                if candidate.is_file():
                    rows[candidate.resolve()] = row
                    break
    return rows


def photo_records(folders: Iterable) -> List[dict]:
    """One record per photo of the folders: ``path``, ``split`` (train/val/eval, see
    ``data_splits.folder_photo_split``) and, from the folder's manifest, ``repo``, ``commit``,
    ``source_path``, ``licence`` (``"unknown"`` without one). A photo listed twice counts once."""
    records, seen = [], set()
    for folder in folders:
        manifest = read_manifest(folder)
        for path in folder_photos(folder):
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            row = manifest.get(resolved, {})
            records.append({"path": str(path), "split": folder_photo_split(path.name),
                            "repo": row.get("repo", "unknown"), "commit": row.get("commit", "unknown"),
                            "source_path": row.get("source_path", ""), "licence": row.get("licence", "unknown")})
    return records


def builtin_records(opencv_doc: bool) -> List[dict]:
    """Records (as ``photo_records``) of the built-in training photos."""
    records = [{"path": str(p), "split": "train", "repo": "scikit-image (skimage/data)", "commit": "installed",
                "source_path": p.name, "licence": "see skimage/data/README.txt"} for p in skimage_photos()]
    if opencv_doc:
        records += [{"path": str(p), "split": "train", "repo": "Debian opencv-doc", "commit": "installed",
                     "source_path": p.name, "licence": "see /usr/share/doc/opencv-doc/copyright"}
                    for p in opencv_doc_photos()]
    return records


def licence_summary(records: Sequence[dict]) -> List[dict]:
    """Photos per (repo, commit, licence), most first: the short form kept in a checkpoint."""
    counts = collections.Counter((r["repo"], r["commit"], r["licence"]) for r in records)
    return [{"repo": repo, "commit": commit, "licence": licence, "photos": n}
            for (repo, commit, licence), n in counts.most_common()]


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
    stems = [Path(src).name.split(".")[0] for src in sources]
    duplicates = sorted(k for k, n in collections.Counter(stems).items() if n > 1)
    if duplicates:  # crops (and their labels) are named by the stem: one would overwrite the other
        raise ValueError(f"several source photos share the file name stem {duplicates[:5]}; rename them")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, src in enumerate(sources):
        if is_reserved_for_evaluation(Path(src)):
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
    parser = argparse.ArgumentParser(description="Write grayscale training crops of real photos.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--crops-per-image", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--opencv-doc", action="store_true", help="also use Debian opencv-doc images if present")
    parser.add_argument("--photos", nargs="+", action="extend", default=[], metavar="DIR",
                        help="also use the jpg/png photos under these folders (recursive; MANIFEST.tsv read)")
    parser.add_argument("--no-builtin", action="store_true", help="use only the --photos folders")
    parser.add_argument("--val-out", help="write crops of the folders' validation split here")
    parser.add_argument("--val-crops-per-image", type=int, default=1)
    parser.add_argument("--max-images", type=int, default=None, help="use only the first N photos (smoke runs)")
    args = parser.parse_args(argv)
    if args.no_builtin and not args.photos:
        parser.error("--no-builtin needs --photos")
    records = ([] if args.no_builtin else builtin_records(args.opencv_doc)) + photo_records(args.photos)
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    train = train[:args.max_images] if args.max_images else train
    size = (args.height, args.width)
    written = write_training_crops([Path(r["path"]) for r in train], args.out, size, args.crops_per_image, args.seed)
    print(f"wrote {len(written)} crops of {len(train)} photos to {args.out} "
          f"({sum(r['split'] == 'eval' for r in records)} evaluation photos and {len(val)} validation photos left out)")
    (Path(args.out) / "SOURCES.txt").write_text("".join(f"{r['path']}\n" for r in train))
    (Path(args.out) / "SOURCES.json").write_text(json.dumps(
        {"split": "train", "crops_per_image": args.crops_per_image, "size": list(size), "seed": args.seed,
         "licences": licence_summary(train), "photos": train}, indent=1))
    if args.val_out and val:
        val_written = write_training_crops([Path(r["path"]) for r in val], args.val_out, size,
                                           args.val_crops_per_image, args.seed)
        (Path(args.val_out) / "SOURCES.json").write_text(json.dumps(
            {"split": "val", "crops_per_image": args.val_crops_per_image, "size": list(size), "seed": args.seed,
             "licences": licence_summary(val), "photos": val}, indent=1))
        print(f"wrote {len(val_written)} validation crops of {len(val)} photos to {args.val_out}")


if __name__ == "__main__":
    main()
