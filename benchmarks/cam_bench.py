"""Grad-CAM at every conv layer of resnet50: the product's CLI against pytorch-grad-cam called once per layer.

pytorch-grad-cam averages the maps when given several target layers, so its users get one map per layer by
calling it once per layer (FIELD-NOTES §7); with top-3 classes that is three calls per layer, each one forward
and one backward. The product runs one forward per image batch and one backward per class for all layers.

    pip install grad-cam==1.5.7          # only for this script; not a dependency of the product
    python benchmarks/cam_bench.py [--repeat 3] [--layers all|first,last] [--json out.json]

Both sides: resnet50 with random weights (seed 0; speed does not depend on what was learned), the photos
chelsea and grace_hopper, top-3 classes per image. The product is timed as a whole process (start-up, Hydra,
model build, one PNG per layer and image with the three overlays). The baseline runs warm in this process,
model built once, parameters frozen and only input gradients computed (both in its favour), and is timed
twice: maps only, and maps plus one overlay PNG per (layer, image, class) written with its own
``show_cam_on_image`` and Pillow, as its README shows. Runs are interleaved.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench import hydra_list, machine, measured, photo, run_cli  # noqa: E402
from PIL import Image  # noqa: E402

MODEL, TOP_K = "resnet50", 3


def product(photos: list[Path], layers: str) -> dict:
    overrides = [
        f"models=[{MODEL}]",
        "weights=none",
        f"layers={layers}",
        "methods=[grad_cam]",
        f"grad_cam.top_k={TOP_K}",
        f"images={hydra_list(photos)}",
        "predictions=false",
    ]
    return run_cli(overrides, keep=False)


def baseline(photos: list[Path], layers: str, write_pngs: bool) -> dict:
    """pytorch-grad-cam, one call per (layer, class rank), each batched over the photos."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from pipeline.models.layers import conv_layers, select_layers
    from pipeline.models.registry import load_model, resolve_weights

    loaded = load_model(MODEL, resolve_weights(MODEL, "none", 0), "cpu")
    model = loaded.module
    x = torch.stack([loaded.transform(Image.open(p).convert("RGB")) for p in photos])
    rgb = [np.asarray(Image.open(p).convert("RGB").resize(x.shape[-2:][::-1]), dtype=np.float32) / 255 for p in photos]
    with torch.no_grad():
        top = torch.topk(model(x), TOP_K, dim=1).indices  # [N, k]
    x.requires_grad_(True)  # parameters stay frozen: its backward computes input-side gradients only
    chosen = select_layers(conv_layers(model), layers.strip("[]").split(",") if "," in layers else layers)
    modules = dict(model.named_modules())
    out = Path(tempfile.mkdtemp(prefix="fmi-gradcam-"))
    started = time.perf_counter()
    maps = 0
    try:
        for layer in chosen:
            with GradCAM(model=model, target_layers=[modules[layer.name]]) as cam:
                for rank in range(TOP_K):
                    targets = [ClassifierOutputTarget(int(c)) for c in top[:, rank]]
                    grayscale = cam(input_tensor=x, targets=targets)  # [N, H, W], upsampled and min-max scaled
                    maps += len(grayscale)
                    if write_pngs:
                        for i, g in enumerate(grayscale):
                            overlay = show_cam_on_image(rgb[i], g, use_rgb=True)
                            Image.fromarray(overlay).save(out / f"{layer.name}_{i}_{rank}.png")
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "maps": maps, "layers": len(chosen)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layers", default="all", help="all, or e.g. [first,last]")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        import pytorch_grad_cam  # noqa: F401
    except ImportError:
        print("cam_bench: needs pytorch-grad-cam (pip install grad-cam==1.5.7)", file=sys.stderr)
        return 2
    photos = [photo("chelsea"), photo("grace_hopper")]
    runs: dict[str, list[dict]] = {"product": [], "gradcam_maps": [], "gradcam_pngs": []}
    for i in range(args.repeat):
        runs["product"].append(measured(lambda: product(photos, args.layers)))
        runs["gradcam_maps"].append(measured(lambda: baseline(photos, args.layers, write_pngs=False)))
        runs["gradcam_pngs"].append(measured(lambda: baseline(photos, args.layers, write_pngs=True)))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]['seconds']:.1f}s" for k, v in runs.items()), flush=True)
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    print(f"\nmedians of {args.repeat} (s): " + ", ".join(f"{k} {v:.1f}" for k, v in med.items()))
    print(f"product PNGs: {runs['product'][-1]['pngs']}, pytorch-grad-cam maps: {runs['gradcam_maps'][-1]['maps']}")
    print(f"speedup vs pytorch-grad-cam with PNGs: {med['gradcam_pngs'] / med['product']:.1f}x (target >= 10x)")
    print(f"speedup vs pytorch-grad-cam maps only: {med['gradcam_maps'] / med['product']:.1f}x")
    job = statistics.median(r["engine_seconds"] for r in runs["product"])
    print(
        f"product's job alone (run.json seconds, no start-up): {job:.1f} s, "
        f"{med['gradcam_pngs'] / job:.1f}x / {med['gradcam_maps'] / job:.1f}x"
    )
    others = [r.get("foreign_cpu_s", 0) for v in runs.values() for r in v]
    print(f"other processes' CPU during the runs: median {statistics.median(others):.1f} s")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "runs": runs, "medians": med}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
