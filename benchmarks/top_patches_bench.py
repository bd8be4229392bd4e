"""``top_patches`` at scale: peak memory against the number of images, and throughput against a forward-only floor.

Usage (from the repository root, with the project's virtualenv):

    OMP_NUM_THREADS=1 python benchmarks/top_patches_bench.py --images 500 2000 --together --json top_patches.json

The images are derived offline from the sample photos (matplotlib's grace_hopper, scikit-image's colour data
photos): seeded random crops of 50-100 % of the side, half of them flipped, saved as 256-px JPEGs. For each count:

- ``product``: ``python run.py`` with ``top_patches`` on efficientnet_lite0 (real weights), 5 layers from stem to
  head, 16 channels each (``select=auto``), no predictions, ``batch_size`` fixed: wall time and peak RSS of the
  whole process;
- ``floor``: the same images, the same decoding and preprocessing (``pipeline.images.prepare``), the same batches
  through the same model with forward hooks on the same 5 layers in inference mode, stopping after the deepest:
  no ranking, no crops, no rendering, no files; a whole process too, wall time and peak RSS.

Throughput is compared per image from the difference between the two counts (the fixed cost of start-up, model
load, planning and report cancels), and also as plain whole-run ratios. Timings drift on a shared machine: each
run records the CPU seconds other processes used meanwhile (``foreign_cpu_s``), and the CPU seconds of the
product and floor processes themselves are compared too (the robust figure on a busy machine). ``--together``
runs each count's product and floor side by side (half the wall time; compare CPU seconds then).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from bench import _LAUNCHER, _package_dir, machine, measured, run_cli  # noqa: E402

LAYERS = [
    "features.0.0",
    "features.2.1.block.1.0",
    "features.4.0.block.3.0",
    "features.6.0.block.1.0",
    "features.8.0",
]
MODEL = "efficientnet_lite0"
BATCH = 16
COLOUR = ["astronaut", "chelsea", "coffee", "motorcycle_left", "motorcycle_right", "rocket", "hubble_deep_field"]


def sources() -> list[Path]:
    """The photos the derived set is made from (those present of the list, as installed)."""
    found = [_package_dir("matplotlib") / "mpl-data" / "sample_data" / "grace_hopper.jpg"]
    data = _package_dir("skimage") / "data"
    for name in COLOUR:
        found += sorted(p for p in data.glob(f"{name}.*") if p.suffix in (".png", ".jpg"))
    return [p for p in found if p.is_file()]


def derive(count: int, folder: Path, seed: int = 0) -> list[Path]:
    """``count`` images from the sample photos: seeded crops of 50-100 % of the short side, half flipped."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    photos = [Image.open(p).convert("RGB") for p in sources()]
    rng = random.Random(seed)
    made = []
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        side = int(min(w, h) * rng.uniform(0.5, 1.0))
        left, top = rng.randint(0, w - side), rng.randint(0, h - side)
        image = photo.crop((left, top, left + side, top + side)).resize((256, 256), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"derived_{i:05d}.jpg"
        if not path.exists():
            image.save(path, quality=90)
        made.append(path)
    return made


def floor(folder: Path, count: int) -> None:
    """The forward-only floor (run in its own process by ``--floor``): prints images/s as JSON."""
    import torch

    from pipeline.images import prepare
    from pipeline.models.capture import run_capturing
    from pipeline.models.registry import load_model, resolve_weights

    started = time.perf_counter()
    loaded = load_model(MODEL, resolve_weights(MODEL, "DEFAULT"))
    images = sorted(folder.glob("derived_*.jpg"))[:count]
    ready = time.perf_counter()
    seen = 0
    for start in range(0, len(images), BATCH):
        x = torch.stack([prepare(p, loaded.transform, None)[0] for p in images[start : start + BATCH]])
        with torch.inference_mode():
            run_capturing(loaded.module, x, LAYERS, lambda name, out: None)
        seen += len(x)
    done = time.perf_counter()
    print(json.dumps({"images": seen, "load_s": ready - started, "images_s": done - ready}))


def run_floor(folder: Path, count: int) -> dict:
    usage = Path(tempfile.mkdtemp(prefix="fmi-floor-")) / "rusage.txt"
    command = [sys.executable, str(Path(__file__).resolve()), "--floor", str(folder), str(count)]
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-I", "-c", _LAUNCHER, str(usage), *command], cwd=ROOT, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"floor failed: {out.stderr[-2000:]}")
    rss_kb, cpu = usage.read_text().split()
    return {"wall_s": wall, "peak_rss_mb": int(rss_kb) / 1024, "cpu_s": float(cpu), **json.loads(out.stdout)}


def product(folder: Path, count: int) -> dict:
    images = sorted(folder.glob("derived_*.jpg"))[:count]
    listing = folder / f"first_{count}"
    listing.mkdir(exist_ok=True)
    for path in images:  # a folder holding exactly these images (symlinks)
        link = listing / path.name
        if not link.exists():
            link.symlink_to(path)
    overrides = [
        f"models=[{MODEL}]",
        "layers=[" + ",".join(LAYERS) + "]",
        "methods=[top_patches]",
        f"images=[{listing}]",
        "predictions=false",
        f"batch_size={BATCH}",
    ]
    return run_cli(overrides, keep=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs=2, default=[500, 2000], metavar=("FEW", "MANY"))
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "fmi-top-patches-images")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--together", action="store_true", help="run product and floor of a count concurrently")
    parser.add_argument("--floor", nargs=2, metavar=("FOLDER", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        floor(Path(args.floor[0]), int(args.floor[1]))
        return
    few, many = args.images
    derive(many, args.folder)
    result: dict = {"machine": machine(), "model": MODEL, "layers": LAYERS, "batch_size": BATCH, "runs": {}}
    for count in (few, many):
        if args.together:  # both at once: wall times share the machine, CPU seconds stay comparable
            found: dict = {}
            workers = [
                threading.Thread(
                    target=lambda c=count, found=found: found.__setitem__("product", product(args.folder, c))
                ),
                threading.Thread(
                    target=lambda c=count, found=found: found.__setitem__("floor", run_floor(args.folder, c))
                ),
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            result["runs"][count] = found
        else:
            result["runs"][count] = {
                "product": measured(lambda c=count: product(args.folder, c)),
                "floor": measured(lambda c=count: run_floor(args.folder, c)),
            }
        print(json.dumps({count: result["runs"][count]}, indent=1), flush=True)
    a, b = result["runs"][few], result["runs"][many]
    product_per_image = (b["product"]["seconds"] - a["product"]["seconds"]) / (many - few)
    floor_per_image = (b["floor"]["wall_s"] - a["floor"]["wall_s"]) / (many - few)
    result["summary"] = {
        "peak_rss_ratio_many_over_few": b["product"]["peak_rss_mb"] / a["product"]["peak_rss_mb"],
        "product_s_per_image_marginal": product_per_image,
        "floor_s_per_image_marginal": floor_per_image,
        "throughput_vs_floor_marginal": floor_per_image / product_per_image,
        "throughput_vs_floor_cpu_seconds": {
            c: r["floor"]["cpu_s"] / r["product"]["cpu_seconds"] for c, r in result["runs"].items()
        },
        "throughput_vs_floor_whole_run": {
            c: r["floor"]["wall_s"] / r["product"]["seconds"] for c, r in result["runs"].items()
        },
    }
    print(json.dumps(result["summary"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
