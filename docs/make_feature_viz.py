"""Make the README's feature-visualisation pictures again: efficientnet_lite0 (real weights), four depths, the first
six channels' feature visualisations beside the same six filters, from one run of the product's CLI.

    python docs/make_feature_viz.py             # from the repository root (about 25 CPU-minutes on 2 cores)
    python docs/make_feature_viz.py --from DIR  # copy from a run already made with the same overrides
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LAYERS = ("features.0.0", "features.3.1.block.0.0", "features.5.0.block.0.0", "features.6.1.block.0.0")
OVERRIDES = [
    "models=[efficientnet_lite0]",
    f"layers=[{','.join(LAYERS)}]",
    "methods=[filters,feature_viz]",
    "filters.max_filters=6",
    "feature_viz.max_channels=6",
    "feature_viz.select=first",
    "predictions=false",
]


def copy(run: Path) -> None:
    model = run / "efficientnet_lite0"
    for i, layer in enumerate(LAYERS):
        shutil.copyfile(model / "filters" / f"{layer}.png", DOCS / f"fv_filters_{i}.png")
        shutil.copyfile(model / "feature_viz" / f"{layer}.png", DOCS / f"fv_{i}.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, help="a run directory made with the same overrides")
    args = parser.parse_args()
    if args.source:
        copy(args.source)
    else:
        sys.path.insert(0, str(ROOT))
        from pipeline.images import sample_images

        photo = next(p for p in sample_images() if p.stem == "grace_hopper")
        with tempfile.TemporaryDirectory(prefix="fmi-pictures-") as tmp:
            run = Path(tmp) / "run"
            command = [sys.executable, "run.py", *OVERRIDES, f"images=[{photo}]", f"hydra.run.dir={run}"]
            subprocess.run(command, cwd=ROOT, check=True)
            copy(run)
    print(f"feature-visualisation pictures written to {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
