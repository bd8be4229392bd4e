"""Which photos a run uses: files, folders, globs, and ``samples``, the real photos shipped inside packages."""

from __future__ import annotations

import glob
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from pipeline.errors import UserError
from pipeline.output.files import safe_name

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


@dataclass(frozen=True, eq=False)
class InMemoryImage:
    """An image handed over in Python: a PIL image (preprocessed by the model's transform), or a tensor
    [3, H, W] already preprocessed. Compared by identity, named by ``label``."""

    label: str
    picture: Image.Image | None = None
    tensor: torch.Tensor | None = None

    def __str__(self) -> str:
        return f"<in memory: {self.label}>"


def prepare(image: Path | InMemoryImage, transform) -> torch.Tensor:
    """The model's input [3, H, W] for one image: read and transformed, or taken as it is when preprocessed."""
    if isinstance(image, InMemoryImage):
        if image.tensor is not None:
            return image.tensor
        return transform(image.picture.convert("RGB"))
    return transform(load_image(image))


def load_image(path: Path) -> Image.Image:
    """Decode a photo fully into RGB; raises on unreadable or truncated files."""
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


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
