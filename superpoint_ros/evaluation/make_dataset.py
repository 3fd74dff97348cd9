"""``superpoint-make-dataset OUT``: an HPatches-layout evaluation set built offline from real photos.

For every source photo (scikit-image's sample photos; Debian's opencv-doc sample images when
installed; any ``--images DIR``) it writes two sequences of six images:

- ``v_<name>``: viewpoint. Image 1 is a crop of the photo; images 2..6 are views of the same photo
  under random homographies of increasing strength (rotation, scale, perspective, translation).
  The photo outside the crop fills the new view where it can (mirrored beyond the photo), so
  there are no black borders.
- ``i_<name>``: illumination. Identity geometry; images 2..6 get increasing photometric changes
  (gamma, gain, colour cast, a smooth shading field and sensor noise).

``--conditions rotation,scale,noise,blur,jpeg,lowlight`` (or ``all``) adds one split per condition
the model is known to find hard, each a ``<condition>_<name>`` sequence per photo and variant whose
images 2..6 are levels 1..5 of increasing strength (:data:`CONDITION_LEVELS`): in-plane rotation
about the centre (12..60 deg, random sign), scale about the centre (2^0.2 .. 2^1, i.e. up to 2x
zoom in or out, random direction), sensor noise (Poisson shot noise + Gaussian read noise), linear
motion blur (random direction), JPEG compression and low light (darker exposure with shot noise,
read noise and 8-bit quantisation). Rotation and scale are geometric (true homographies); the
others keep image 1's geometry (identity homographies). The default output (no ``--conditions``)
is unchanged.

Layout (as HPatches): ``<seq>/1.png .. 6.png`` and ``<seq>/H_1_2 .. H_1_6`` (3x3 text, mapping
image-1 pixels to image-k pixels, pixel-centre convention) plus ``dataset.json`` (sources, seed,
parameters). Same arguments -> same bytes.
"""
from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..data_splits import scene_group, split_of

#: scikit-image photos reserved for evaluation (superpoint_ros.data_splits.SKIMAGE_EVAL: never
#: trained on), by their skimage.data function names.
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle")
#: Where Debian/Ubuntu's opencv-doc package puts OpenCV's sample images.
OPENCV_DOC_DIRS = ("/usr/share/doc/opencv-doc/examples/data",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff")
#: opencv-doc sample images that are not photographs (disparity maps, drawings, patterns).
NOT_PHOTOS = ("aloegt", "gradient", "chessboard", "pca_test1", "pic1", "pic2", "pic3", "pic4", "pic5", "pic6")
NUM_IMAGES = 6

#: Condition splits of ``--conditions``: the parameter of images 2..6 (levels 1..5) and its unit.
CONDITION_LEVELS = {
    "rotation": ((12.0, 24.0, 36.0, 48.0, 60.0), "deg in-plane rotation about the image centre, random sign"),
    "scale": ((0.2, 0.4, 0.6, 0.8, 1.0), "log2 of the zoom about the image centre (2^l in or out, random)"),
    "noise": ((1000.0, 300.0, 100.0, 40.0, 15.0), "photo-electrons at white (Poisson shot noise) with Gaussian "
              "read noise of 2, 4, 6, 8, 10 grey levels: noise std at mid-grey ~6, 11, 19, 30, 48 grey levels"),
    "blur": ((3.0, 7.0, 11.0, 15.0, 21.0), "px length of a linear motion-blur kernel, random direction"),
    "jpeg": ((50.0, 30.0, 20.0, 10.0, 5.0), "JPEG quality (OpenCV IMWRITE_JPEG_QUALITY)"),
    "lowlight": ((0.5, 0.3, 0.18, 0.1, 0.06), "exposure relative to image 1 (no gain), shot noise at "
                 "1000 electrons white, read noise 1.5 grey levels, 8-bit quantisation"),
}
CONDITIONS = tuple(CONDITION_LEVELS)
#: Read noise (grey levels) of the "noise" condition's levels 1..5.
NOISE_READ_SIGMA = (2.0, 4.0, 6.0, 8.0, 10.0)

default_conf = {
    "size": (480, 640),         # (height, width) of every written image
    "seed": 0,
    "max_rotation_deg": 25.0,   # at full strength (image 6); image k uses strength (k-1)/5
    "max_log_scale": 0.35,
    "max_perspective": 0.15,    # corner jitter, fraction of the image size
    "max_translation": 0.08,    # fraction of the image size
    "noise_sigma": 2.0,         # grey levels of Gaussian noise added to images 2..6
    "min_source_size": 256,     # skip smaller source photos (px, shorter side)
    "variants": 3,              # sequences per photo and kind (different crop and draws)
}


def _to_bgr8(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        image = np.clip(image * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        image = image[..., :3]
    return np.ascontiguousarray(image)


def skimage_photos() -> Iterator[Tuple[str, np.ndarray]]:
    """``(name, BGR uint8)`` for the bundled scikit-image photos that load without a download."""
    from skimage import data  # optional (the eval/train extras): bundled photos

    for name in SKIMAGE_PHOTOS:
        try:
            image = getattr(data, name)()
        except Exception:  # optional data that needs pooch/network: just not available here
            continue
        if isinstance(image, tuple):  # stereo_motorcycle -> (left, right, disparity)
            image = image[0]
        image = _to_bgr8(image)
        if image.ndim == 3 and image.shape[2] == 3:
            image = image[..., ::-1]  # scikit-image is RGB
        yield name, np.ascontiguousarray(image)


def folder_photos(folder: Path) -> Iterator[Tuple[str, np.ndarray]]:
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                yield path.stem, image


def one_per_scene(photos: Iterator[Tuple[str, np.ndarray]]) -> Iterator[Tuple[str, np.ndarray]]:
    """The first photo of each scene group (``superpoint_ros.data_splits.scene_group``)."""
    seen = set()
    for name, image in photos:
        group = scene_group(name)
        if group not in seen:
            seen.add(group)
            yield name, image


def collect_sources(extra_dirs: List[Path], use_skimage: bool = True, use_opencv_doc: bool = True,
                    min_size: int = 256) -> List[Tuple[str, np.ndarray]]:
    """All usable source photos, named uniquely (lower-case, ``[a-z0-9_]``)."""
    iterators = [skimage_photos()] if use_skimage else []
    if use_opencv_doc:
        # only the evaluation split (the rest are training data), only photographs, and one photo
        # per scene (28 near-identical calibration checkerboards would swamp the averages)
        iterators += [one_per_scene((n, im) for n, im in folder_photos(Path(d))
                                    if split_of(n) == "eval" and n.lower() not in NOT_PHOTOS)
                      for d in OPENCV_DOC_DIRS if Path(d).is_dir()]
    iterators += [folder_photos(d) for d in extra_dirs]
    sources, seen = [], set()
    for iterator in iterators:
        for name, image in iterator:
            if min(image.shape[:2]) < min_size:
                continue
            clean = "".join(c if c.isalnum() else "_" for c in name.lower())
            while clean in seen:
                clean += "_"
            seen.add(clean)
            sources.append((clean, image))
    return sources


def random_homography(rng: np.random.Generator, size: Tuple[int, int], strength: float, conf: dict) -> np.ndarray:
    """A plausible random viewpoint change of the given strength in [0, 1] for an (H, W) image:
    rotation + scale about the centre, corner jitter (perspective), translation. Re-drawn until the
    image maps to a convex quadrilateral covering a sensible area."""
    height, width = size
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float32)
    centre = corners.mean(axis=0)
    extent = np.array([width, height], np.float32)
    for _ in range(100):
        angle = np.deg2rad(rng.uniform(-1, 1) * conf["max_rotation_deg"] * strength)
        scale = np.exp(rng.uniform(-1, 1) * conf["max_log_scale"] * strength)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
        moved = centre + scale * (corners - centre) @ rotation.T
        moved += rng.uniform(-1, 1, (4, 2)) * conf["max_perspective"] * strength * extent
        moved += rng.uniform(-1, 1, 2) * conf["max_translation"] * strength * extent
        quad_area = cv2.contourArea(moved.astype(np.float32))
        if cv2.isContourConvex(moved.astype(np.float32)) and 0.3 < quad_area / (width * height) < 3.0:
            return cv2.getPerspectiveTransform(corners, moved.astype(np.float32)).astype(np.float64)
    raise RuntimeError("could not draw a valid random homography")  # practically unreachable


def photometric_change(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """BGR uint8 -> BGR uint8 with gamma, gain, colour cast and a smooth shading field."""
    height, width = image.shape[:2]
    x = image.astype(np.float32) / 255.0
    gamma = np.exp(rng.uniform(-1, 1) * 0.6 * strength)
    gain = np.exp(rng.uniform(-1, 1) * 0.5 * strength)
    cast = np.exp(rng.uniform(-1, 1, 3) * 0.2 * strength).astype(np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction) + 1e-9
    ramp = ((xs / width - 0.5) * direction[0] + (ys / height - 0.5) * direction[1])
    spot = rng.uniform([0, 0], [width, height])
    radius = 0.5 * max(height, width)
    blob = np.exp(-((xs - spot[0]) ** 2 + (ys - spot[1]) ** 2) / (2 * radius ** 2))
    shading = np.exp(strength * (0.8 * ramp + 0.5 * (blob - 0.5)))
    y = gain * np.power(x, gamma) * shading[..., None] * cast
    return np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)


def add_noise(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return image
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


def prepare_source(image: np.ndarray, size: Tuple[int, int], margin: float = 1.5,
                   shift: Tuple[float, float] = (0.0, 0.0)) -> Tuple[np.ndarray, np.ndarray]:
    """Resize the photo to cover ``margin`` times the output size; returns ``(resized, T)`` where
    ``T`` maps reference-image pixels to resized-photo pixels (a crop, centred when ``shift`` is 0;
    ``shift`` in [-1, 1] moves it towards the photo's edges)."""
    height, width = size
    h, w = image.shape[:2]
    scale = max(margin * height / h, margin * width / w)
    new_w, new_h = int(round(w * scale)), int(round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    offset = np.array([(new_w - width) / 2.0 * (1 + 0.8 * shift[0]), (new_h - height) / 2.0 * (1 + 0.8 * shift[1])])
    to_source = np.array([[1, 0, np.floor(offset[0])], [0, 1, np.floor(offset[1])], [0, 0, 1]], np.float64)
    return resized, to_source


def viewpoint_sequence(image: np.ndarray, rng: np.random.Generator, conf: dict) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Six views and the five homographies H_1_k of a viewpoint sequence."""
    size = tuple(conf["size"])
    source, to_source = prepare_source(image, size, shift=tuple(conf["_shift"]))
    dsize = (size[1], size[0])
    # warpPerspective samples dst(y) = src(M^-1 y); image k at y shows reference pixel H^-1 y,
    # i.e. source pixel T H^-1 y, so M = H T^-1.
    reference = cv2.warpPerspective(source, np.linalg.inv(to_source), dsize, flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT_101)
    images, homographies = [reference], []
    for k in range(2, NUM_IMAGES + 1):
        h = random_homography(rng, size, (k - 1) / (NUM_IMAGES - 1), conf)
        view = cv2.warpPerspective(source, h @ np.linalg.inv(to_source), dsize, flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT_101)
        images.append(add_noise(view, rng, conf["noise_sigma"]))
        homographies.append(h)
    return images, homographies


def illumination_sequence(image: np.ndarray, rng: np.random.Generator, conf: dict) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Six images with identity geometry and increasing photometric change."""
    size = tuple(conf["size"])
    source, to_source = prepare_source(image, size, shift=tuple(conf["_shift"]))
    reference = cv2.warpPerspective(source, np.linalg.inv(to_source), (size[1], size[0]), flags=cv2.INTER_LINEAR)
    images = [reference]
    for k in range(2, NUM_IMAGES + 1):
        changed = photometric_change(reference, rng, (k - 1) / (NUM_IMAGES - 1))
        images.append(add_noise(changed, rng, conf["noise_sigma"] * (1 + (k - 1) / 2)))
    return images, [np.eye(3) for _ in range(2, NUM_IMAGES + 1)]


def centred_similarity(size: Tuple[int, int], angle_deg: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """3x3 map of pixel coordinates: rotation by ``angle_deg`` (positive turns +x towards +y, i.e.
    clockwise on screen, y being down) and scaling by ``scale`` about the centre of an (H, W) image,
    pixel-centre convention."""
    height, width = size
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    a = np.deg2rad(angle_deg)
    linear = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    h = np.eye(3)
    h[:2, :2] = linear
    h[:2, 2] = centre - linear @ centre
    return h


def sensor_noise(image: np.ndarray, rng: np.random.Generator, electrons_at_white: float, read_sigma: float,
                 exposure: float = 1.0) -> np.ndarray:
    """BGR uint8 -> BGR uint8 seen by a sensor: the scene (``image``) at ``exposure`` times the
    reference exposure, Poisson shot noise with ``electrons_at_white`` photo-electrons for a white
    pixel at the reference exposure, Gaussian read noise of ``read_sigma`` grey levels, rounding and
    clipping to 8 bits (no gain: a dim exposure stays dark)."""
    electrons_per_level = electrons_at_white / 255.0
    expected = image.astype(np.float64) * exposure * electrons_per_level
    grey = rng.poisson(expected) / electrons_per_level + rng.normal(0.0, read_sigma, image.shape)
    return np.clip(np.round(grey), 0, 255).astype(np.uint8)


def motion_blur(image: np.ndarray, length_px: float, angle_deg: float) -> np.ndarray:
    """Linear motion blur: a normalised line kernel of ``length_px`` centred on the pixel (no
    shift of the image content), direction ``angle_deg``."""
    radius = int(np.ceil(length_px / 2.0))
    size = 2 * radius + 1
    kernel = np.zeros((size, size), np.float32)
    a = np.deg2rad(angle_deg)
    for t in np.linspace(-length_px / 2.0, length_px / 2.0, 4 * size):
        x, y = radius + t * np.cos(a), radius + t * np.sin(a)
        kernel[int(round(y)), int(round(x))] += 1.0
    kernel = 0.5 * (kernel + kernel[::-1, ::-1])  # exactly symmetric: the blur does not move the content
    return cv2.filter2D(image, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT_101)


def jpeg_compress(image: np.ndarray, quality: int) -> np.ndarray:
    """BGR uint8 through an OpenCV JPEG encode/decode at ``quality`` (1..100)."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OSError("JPEG encoding failed")
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def condition_sequence(image: np.ndarray, rng: np.random.Generator, conf: dict,
                       condition: str) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Six images and the five homographies H_1_k of a ``condition`` sequence (a key of
    :data:`CONDITION_LEVELS`); image k shows level k-1."""
    size = tuple(conf["size"])
    # 2x zoom-out and 60 deg rotation see up to ~2x the reference view: a wider source keeps the
    # photo (not its mirror image) in view
    margin = 2.1 if condition in ("rotation", "scale") else 1.5
    source, to_source = prepare_source(image, size, margin=margin, shift=tuple(conf["_shift"]))
    dsize = (size[1], size[0])
    reference = cv2.warpPerspective(source, np.linalg.inv(to_source), dsize, flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT_101)
    images, homographies = [reference], []
    for index, level in enumerate(CONDITION_LEVELS[condition][0]):
        h = np.eye(3)
        if condition in ("rotation", "scale"):
            sign = rng.choice([-1.0, 1.0])
            h = (centred_similarity(size, angle_deg=sign * level) if condition == "rotation"
                 else centred_similarity(size, scale=2.0 ** (sign * level)))
            view = cv2.warpPerspective(source, h @ np.linalg.inv(to_source), dsize, flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REFLECT_101)
            view = add_noise(view, rng, conf["noise_sigma"])
        elif condition == "noise":
            view = sensor_noise(reference, rng, level, read_sigma=NOISE_READ_SIGMA[index])
        elif condition == "blur":
            view = motion_blur(reference, level, rng.uniform(0.0, 180.0))
        elif condition == "jpeg":
            view = jpeg_compress(reference, int(level))
        elif condition == "lowlight":
            view = sensor_noise(reference, rng, 1000.0, read_sigma=1.5, exposure=level)
        else:
            raise ValueError(f"unknown condition {condition!r} (expected one of {', '.join(CONDITIONS)})")
        images.append(view)
        homographies.append(h)
    return images, homographies


def write_sequence(folder: Path, images: List[np.ndarray], homographies: List[np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images, start=1):
        if not cv2.imwrite(str(folder / f"{k}.png"), image):
            raise OSError(f"could not write {folder / f'{k}.png'}")
    for k, h in enumerate(homographies, start=2):
        np.savetxt(folder / f"H_1_{k}", h, fmt="%.10g")


def make_dataset(output: Path, conf: Optional[dict] = None, sources: Optional[List[Tuple[str, np.ndarray]]] = None,
                 kinds: str = "iv", max_sources: Optional[int] = None, conditions: Sequence[str] = ()) -> Dict:
    """Build the dataset; returns the manifest also written to ``output/dataset.json``.

    ``kinds``: any of ``"i"``, ``"v"`` (may be empty); ``conditions``: keys of
    :data:`CONDITION_LEVELS`, one split each."""
    conf = {**default_conf, **(conf or {})}
    unknown = set(conf) - set(default_conf)
    if unknown:
        raise ValueError(f"unknown make_dataset options: {sorted(unknown)}")
    if sources is None:
        sources = collect_sources([], min_size=conf["min_source_size"])
    if max_sources:
        sources = sources[:max_sources]
    if conf["variants"] < 1:
        raise ValueError(f"variants must be >= 1, got {conf['variants']}")
    if not sources:
        raise ValueError("no source photos found (scikit-image missing? pass --images DIR)")
    unknown_conditions = [c for c in conditions if c not in CONDITION_LEVELS]
    if unknown_conditions:
        raise ValueError(f"unknown conditions {unknown_conditions} (expected some of {', '.join(CONDITIONS)})")
    if not kinds and not conditions:
        raise ValueError("nothing to build: no kinds and no conditions")
    output = Path(output)
    sequences = []
    for index, (name, image) in enumerate(sources):
        for kind in kinds:
            builder = viewpoint_sequence if kind == "v" else illumination_sequence
            for variant in range(conf["variants"]):
                rng = np.random.default_rng([conf["seed"], index, ord(kind), variant])
                # variant 0 is the centred crop; the others look at other parts of the photo
                shift = (0.0, 0.0) if variant == 0 else tuple(rng.uniform(-1, 1, 2))
                images, homographies = builder(image, rng, {**conf, "_shift": shift})
                sequence = f"{kind}_{name}" + (f"_{variant + 1}" if variant else "")
                write_sequence(output / sequence, images, homographies)
                sequences.append(sequence)
        for condition in conditions:
            for variant in range(conf["variants"]):
                # its own stream per condition, so adding a condition leaves the others' bytes alone
                rng = np.random.default_rng([conf["seed"], index, zlib.crc32(condition.encode()), variant])
                shift = (0.0, 0.0) if variant == 0 else tuple(rng.uniform(-1, 1, 2))
                images, homographies = condition_sequence(image, rng, {**conf, "_shift": shift}, condition)
                sequence = f"{condition}_{name}" + (f"_{variant + 1}" if variant else "")
                write_sequence(output / sequence, images, homographies)
                sequences.append(sequence)
    manifest = {"layout": "hpatches", "sequences": sequences, "sources": [n for n, _ in sources],
                "conf": {k: list(v) if isinstance(v, tuple) else v for k, v in conf.items()},
                "homography_convention": "H_1_k maps image-1 pixels to image-k pixels; integer coordinates "
                                         "at pixel centres"}
    if conditions:
        manifest["conditions"] = {c: {"levels": list(CONDITION_LEVELS[c][0]), "unit": CONDITION_LEVELS[c][1]}
                                  for c in conditions}
    (output / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def parse_size(text: str) -> Tuple[int, int]:
    """``"480x640"`` (height x width) -> ``(480, 640)``."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, e.g. 480x640, got {text!r}") from None
    if height < 16 or width < 16:
        raise argparse.ArgumentTypeError(f"size {text!r} is too small (at least 16x16)")
    return height, width


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="superpoint-make-dataset", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", type=Path, help="output folder (HPatches layout)")
    p.add_argument("--size", type=parse_size, default=default_conf["size"], help="HEIGHTxWIDTH (default 480x640)")
    p.add_argument("--seed", type=int, default=default_conf["seed"])
    p.add_argument("--variants", type=int, default=default_conf["variants"],
                   help="sequences per photo and kind (default 3)")
    p.add_argument("--images", type=Path, action="append", default=[], help="extra folder of photos (repeatable)")
    p.add_argument("--no-skimage", action="store_true", help="don't use scikit-image's photos")
    p.add_argument("--max-sources", type=int, default=None, help="use at most this many photos")
    p.add_argument("--kinds", default="iv", choices=["i", "v", "iv", "none"],
                   help="illumination and/or viewpoint sequences ('none': only --conditions)")
    p.add_argument("--conditions", type=parse_conditions, default=(), metavar="C,C",
                   help=f"also build these condition splits: {','.join(CONDITIONS)} or 'all' (default none)")
    return p


def parse_conditions(text: str) -> Tuple[str, ...]:
    """``"rotation,jpeg"`` -> ``("rotation", "jpeg")``; ``"all"`` -> :data:`CONDITIONS`."""
    if text.strip().lower() == "all":
        return CONDITIONS
    names = tuple(dict.fromkeys(c.strip().lower() for c in text.split(",") if c.strip()))
    unknown = [c for c in names if c not in CONDITION_LEVELS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown condition(s) {', '.join(unknown)}: expected {','.join(CONDITIONS)}")
    return names


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for folder in args.images:
        if not folder.is_dir():
            print(f"superpoint-make-dataset: --images {folder}: not a folder", file=sys.stderr)
            return 2
    sources = collect_sources(args.images, use_skimage=not args.no_skimage, min_size=default_conf["min_source_size"])
    try:
        manifest = make_dataset(args.output, {"size": args.size, "seed": args.seed, "variants": args.variants},
                                sources, "" if args.kinds == "none" else args.kinds, args.max_sources, args.conditions)
    except (ValueError, OSError) as e:
        print(f"superpoint-make-dataset: {e}", file=sys.stderr)
        return 2
    pairs = len(manifest["sequences"]) * (NUM_IMAGES - 1)
    print(f"wrote {len(manifest['sequences'])} sequences ({pairs} pairs) from {len(manifest['sources'])} photos "
          f"({args.size[0]}x{args.size[1]}) to {args.output}")
    if not any(Path(d).is_dir() for d in OPENCV_DOC_DIRS):  # README's tables were measured with it
        print(f"note: Debian's opencv-doc is not installed ({OPENCV_DOC_DIRS[0]} missing): {pairs} pairs "
              "without its photos; the README's set (540 pairs with the default options) needs: "
              "sudo apt-get install opencv-doc")
    return 0


if __name__ == "__main__":
    sys.exit(main())
