"""Make the README's top-patches and cropped guided-backprop pictures, with the product itself.

    python docs/make_top_patches.py        # from the repository root, with the project's virtualenv (+ scikit-image)

``top_patches`` on efficientnet_lite0 (real weights) at three depths over 160 images derived from the sample
photos (seeded crops and flips, as ``benchmarks/top_patches_bench.py`` makes them), and ``guided_backprop`` at
the stem (``features.0.0``) on grace_hopper, where ``crop=auto`` shows each unit's 3-px field with its margin.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LAYERS = {  # README picture: layer (shallow, middle, deep)
    "top_patches_shallow.png": "features.2.1.block.1.0",
    "top_patches_middle.png": "features.4.2.block.1.0",
    "top_patches_deep.png": "features.6.3.block.3.0",
}


def main() -> int:
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    from top_patches_bench import derive

    from pipeline.images import sample_images

    with tempfile.TemporaryDirectory(prefix="fmi-pictures-") as tmp:
        images = Path(tmp) / "images"
        derive(160, images, seed=1)
        run = Path(tmp) / "run"
        layers = "[" + ",".join(LAYERS.values()) + "]"
        settings = ["top_patches.max_channels=6", "top_patches.k=8", "predictions=false", "batch_size=16"]
        command = [sys.executable, "run.py", "methods=[top_patches]", f"layers={layers}", f"images=[{images}]"]
        subprocess.run([*command, *settings, f"hydra.run.dir={run}"], cwd=ROOT, check=True)
        for name, layer in LAYERS.items():
            shutil.copyfile(run / "efficientnet_lite0" / "top_patches" / f"{layer}.png", DOCS / name)
        photo = next(p for p in sample_images() if p.stem == "grace_hopper")
        run = Path(tmp) / "gb"
        command = [sys.executable, "run.py", "methods=[guided_backprop]", "layers=[features.0.0]", f"images=[{photo}]"]
        subprocess.run([*command, "guided_backprop.top_k=6", f"hydra.run.dir={run}"], cwd=ROOT, check=True)
        found = run / "efficientnet_lite0" / "guided_backprop" / "features.0.0__grace_hopper.png"
        shutil.copyfile(found, DOCS / "guided_backprop_cropped.png")
    print(f"top-patches pictures written to {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
