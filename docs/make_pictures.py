"""Make the README's pictures again, from the default job exactly as the Quickstart runs it.

    python docs/make_pictures.py        # from the repository root, with the project's virtualenv

The default job's ``images: [samples]`` are matplotlib's grace_hopper.jpg and scikit-image's chelsea and coffee;
the README shows grace_hopper's pictures, so this script passes that photo alone (the same pictures, up to the float
rounding of a different batch). Everything else is the default job.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PICTURES = {  # README picture: the default job's file
    "filters_stem.png": "filters/features.0.0.png",
    "feature_maps.png": "feature_maps/features.2.0.block.0.0__grace_hopper.png",
    "guided_backprop.png": "guided_backprop/features.8.0__grace_hopper.png",
    "grad_cam.png": "grad_cam/features.8.0__grace_hopper.png",
    "guided_grad_cam.png": "guided_grad_cam/features.8.0__grace_hopper.png",
}
OVERVIEW = "overview/overview__grace_hopper"
ROWS_PX = 880  # the overview's header and first rows
FRAMES = (0, 12, 30, 48)  # GIF frames shown side by side: input to output


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from pipeline.images import sample_images

    photo = next(p for p in sample_images() if p.stem == "grace_hopper")
    with tempfile.TemporaryDirectory(prefix="fmi-pictures-") as tmp:
        run = Path(tmp) / "run"
        subprocess.run([sys.executable, "run.py", f"images=[{photo}]", f"hydra.run.dir={run}"], cwd=ROOT, check=True)
        model = run / "efficientnet_lite0"
        for name, source in PICTURES.items():
            shutil.copyfile(model / source, DOCS / name)
        overview = Image.open(model / f"{OVERVIEW}.png")
        overview.crop((0, 0, overview.width, min(ROWS_PX, overview.height))).save(DOCS / "overview_rows.png")
        gif = Image.open(model / f"{OVERVIEW}.gif")
        frames = []
        for index in FRAMES:
            gif.seek(min(index, gif.n_frames - 1))
            frames.append(gif.convert("RGB"))
        strip = Image.new("RGB", (sum(f.width for f in frames), max(f.height for f in frames)), "white")
        x = 0
        for frame in frames:
            strip.paste(frame, (x, 0))
            x += frame.width
        strip.save(DOCS / "overview_frames.png")
    print(f"README pictures written to {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
