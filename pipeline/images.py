"""Which photos a run uses: files, folders, globs, and ``samples``, the real photos shipped inside packages."""

from __future__ import annotations

import glob
import importlib.util
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.errors import UserError
from pipeline.output.files import safe_name

_HIGH_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")
_PILLOW_LIMIT = threading.Lock()  # Image.MAX_IMAGE_PIXELS is module state: one open at a time swaps it


class ImageReadError(Exception):
    """An image that cannot be used, said in one line (too large, not an image, truncated)."""


SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# (package, file inside the package) for colour photos known to ship in wheels.
_SAMPLES = [
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
]


def sample_images() -> list[Path]:
    """The sample photos of installed packages (matplotlib's grace_hopper.jpg is always there)."""
    found = []
    for package, relative in _SAMPLES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        path = Path(spec.origin).parent / relative
        if path.is_file():
            found.append(path)
    return found


def resolve_images(spec) -> list[Path]:
    """Expand a list of files, folders, glob patterns and ``samples`` into unique image paths, in order."""
    items = [spec] if isinstance(spec, str) else list(spec or [])
    paths: list[Path] = []
    for item in items:
        text = str(item)
        if text == "samples":
            paths.extend(sample_images())
            continue
        path = Path(text).expanduser()
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
        elif path.is_file():
            matches = [path]
        elif any(ch in text for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        else:
            raise UserError(f"images: {text!r} is neither a file, a folder, a glob pattern nor 'samples'.")
        if not matches:
            raise UserError(f"images: {text!r} matches no image file ({', '.join(sorted(SUFFIXES))}).")
        paths.extend(matches)
    unique = list(dict.fromkeys(p.resolve() for p in paths))
    if not unique:
        raise UserError("images: no images found; give files, folders, globs or 'samples'.")
    return unique


def _open(path: Path, max_pixels: int | None) -> Image.Image:
    """Open (header only) with our pixel limit in place of Pillow's, which it would otherwise apply first
    (``None``: Pillow's own decompression-bomb limit)."""
    with _PILLOW_LIMIT, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        previous = Image.MAX_IMAGE_PIXELS
        if max_pixels is not None:
            Image.MAX_IMAGE_PIXELS = None
        try:
            image = Image.open(path)
        except UnidentifiedImageError:
            raise ImageReadError("not an image file Pillow can read") from None
        except Image.DecompressionBombError as exc:
            raise ImageReadError(f"too large: {exc}") from None
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise ImageReadError(
            f"too large: {width}×{height} = {width * height:,} pixels, above max_image_pixels={max_pixels:,}"
        )
    return image


def _eight_bit(values: np.ndarray, mode: str) -> np.ndarray:
    """16-bit, 32-bit and float grayscale to uint8 as a viewer shows it: 16-bit files over 0-65535; 32-bit
    integers over 0-255 or 0-65535 and floats over 0-1 or 0-255 when their values fit; any other range is
    stretched from its minimum to its maximum."""
    v = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        top = 65535.0
    elif lo >= 0 and hi <= 1 and mode == "F":
        top = 1.0
    elif lo >= 0 and hi <= 255:
        top = 255.0
    elif lo >= 0 and hi <= 65535 and mode == "I":
        top = 65535.0
    else:
        v, top = v - lo, (hi - lo) or 1.0
    return np.clip(np.rint(v * (255.0 / top)), 0, 255).astype(np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB as a person sees the file: high-bit gray scaled (``convert`` would clip it to white), transparency
    composited over white, CMYK / palette / gray through Pillow's own conversions."""
    if image.mode in _HIGH_BIT:
        return Image.fromarray(_eight_bit(np.asarray(image), image.mode)).convert("RGB")
    if image.mode in _ALPHA or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def open_image(path: Path, max_pixels: int | None = None) -> tuple[Image.Image, list[str]]:
    """Decode a photo into upright RGB, with notes on what was not shown (an animation's other frames).

    The EXIF orientation is applied, as every image viewer does. Raises ImageReadError (one line) for a file
    that is too large (over ``max_pixels``, the run's ``max_image_pixels``), not an image, truncated or corrupt."""
    notes = []
    with _open(Path(path), max_pixels) as image:
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            notes.append(f"first of {frames} frames used")
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return _to_rgb(upright), notes
        except (OSError, SyntaxError, ValueError) as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ImageReadError(f"truncated or corrupt ({text})") from None


def load_image(path: Path, max_pixels: int | None = None) -> Image.Image:
    """Decode a photo fully into upright RGB (see ``open_image``)."""
    return open_image(path, max_pixels)[0]


@dataclass(frozen=True, eq=False)
class InMemoryImage:
    """An image handed over in Python: a PIL image (preprocessed by the model's transform), or a tensor
    [3, H, W] already preprocessed. Compared by identity, named by ``label``."""

    label: str
    picture: Image.Image | None = None
    tensor: torch.Tensor | None = None

    def __str__(self) -> str:
        return f"<in memory: {self.label}>"


def prepare(image: Path | InMemoryImage, transform, max_pixels: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """The model's input [3, H, W] for one image (read and transformed, or taken as it is when preprocessed),
    with notes on what was not shown (see open_image)."""
    if isinstance(image, InMemoryImage):
        if image.tensor is not None:
            return image.tensor, []
        return transform(_to_rgb(image.picture)), []
    picture, notes = open_image(image, max_pixels)
    return transform(picture), notes


def image_labels(paths: list[Path | InMemoryImage]) -> dict[Path | InMemoryImage, str]:
    """Short unique file-name-safe names for images (stem, with the parent folder added where stems collide)."""
    labels: dict[Path | InMemoryImage, str] = {}
    stems = [safe_name(p.label if isinstance(p, InMemoryImage) else p.stem) for p in paths]
    for path, stem in zip(paths, stems, strict=True):
        if isinstance(path, InMemoryImage) or stems.count(stem) == 1:
            label = stem
        else:
            label = safe_name(f"{path.parent.name}_{path.stem}")
        base, n = label, 1
        while label in labels.values():
            n += 1
            label = f"{base}_{n}"
        labels[path] = label
    return labels


def image_names(paths: list[Path | InMemoryImage]) -> dict[Path | InMemoryImage, str]:
    """What headers and reports call each image: its file name as written (unicode kept) without the suffix,
    with the suffix or the parent folder added where that is needed to tell two images apart."""
    files = [p for p in paths if not isinstance(p, InMemoryImage)]
    stems = [p.stem for p in files]
    names = [p.name for p in files]
    found: dict[Path | InMemoryImage, str] = {}
    for path in paths:
        if isinstance(path, InMemoryImage):
            found[path] = path.label
        elif stems.count(path.stem) == 1:
            found[path] = path.stem
        elif names.count(path.name) == 1:
            found[path] = path.name
        else:
            found[path] = f"{path.parent.name}/{path.name}"
    return found
