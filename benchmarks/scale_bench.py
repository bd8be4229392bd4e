"""Sweeps at the size users run them, each figure measured side by side with the previous code in one run.

Usage (from the repository root, with the project's virtualenv; chromium for the report figure):

    python benchmarks/scale_bench.py --previous /path/to/old/checkout      # everything
    python benchmarks/scale_bench.py --previous OLD --only zoo startup --json scale.json

``--previous`` is a checkout of the code to compare with (e.g. ``git worktree add /tmp/old <rev>``); both run
with this virtualenv, as whole processes. Figures:

- ``zoo``: every model (80 torchvision classification models plus efficientnet_lite0) × first and last conv
  layer × filters, feature maps (top 16) and guided backprop (top 4) × one photo, random weights: wall time,
  peak RSS, and headless Chromium's time to the first screenshot of the run's index.html. The new code runs
  ``experiment=zoo``; the previous code gets the same settings with the 81 names pasted.
- ``memory``: efficientnet_b7 guided backprop, every conv layer (top 1 channel, so the run takes minutes, not
  hours: memory is the graph of the forward, whatever the number of targets), 4 photos. The new code with
  ``memory_budget=8GB`` (batch_size auto); the previous code with its batch of 4. Peak RSS.
- ``startup``: the fixed cost of a job: alexnet, first conv layer, filters only, one photo (whole process).
- ``standard``: the standard sweep (``experiment=standard_sweep``, chelsea and grace_hopper), whole process.

Timings drift on a shared machine: every run records the CPU seconds other processes used meanwhile.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

from bench import hydra_list, machine, measured, photo, run_cli  # noqa: E402
from report_bench import browse, chromium  # noqa: E402

ZOO_SETTINGS = [
    "weights=none",
    "layers=[first,last]",
    "methods=[filters,feature_maps,guided_backprop]",
    "feature_maps.top_k=16",
    "guided_backprop.top_k=4",
]


def zoo_models() -> list[str]:
    from pipeline.models.registry import available_models

    return available_models()


def figure_args(name: str, side: str) -> list[str]:
    """The CLI overrides of one figure for one side (``new`` or ``previous``)."""
    grace = photo("grace_hopper")
    if name == "zoo":
        models = ["experiment=zoo"] if side == "new" else [f"models={hydra_list(zoo_models())}", *ZOO_SETTINGS]
        return [*models, f"images={hydra_list([grace])}", "predictions=false"]
    if name == "memory":
        photos = [grace, photo("chelsea"), photo("coffee"), photo("astronaut")]
        budget = ["memory_budget=8GB"] if side == "new" else []
        return [
            "models=[efficientnet_b7]",
            "weights=none",
            "layers=all",
            "methods=[guided_backprop]",
            "guided_backprop.top_k=1",
            f"images={hydra_list(photos)}",
            "predictions=false",
            *budget,
        ]
    if name == "startup":
        return [
            "models=[alexnet]",
            "weights=none",
            "layers=[first]",
            "methods=[filters]",
            f"images={hydra_list([grace])}",
        ]
    if name == "standard":
        return ["experiment=standard_sweep", f"images={hydra_list([photo('chelsea'), grace])}"]
    raise ValueError(name)


def one_run(name: str, side: str, root: Path) -> dict:
    result = run_cli(figure_args(name, side), keep=name == "zoo", root=root)
    if name == "zoo":
        kept = Path(result.pop("kept"))
        index = Path(result["run_dir"]) / "index.html"
        if chromium() and index.is_file():
            with tempfile.TemporaryDirectory(prefix="fmi-zoo-browser-") as tmp:
                shown = browse(index.as_uri(), Path(tmp) / "shot.png", Path(tmp) / "profile")
            result.update({f"index_{k}": v for k, v in shown.items()})
        result["index_kb"] = index.stat().st_size / 1024 if index.is_file() else None
        shutil.rmtree(kept, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--previous", type=Path, required=True, help="checkout of the code to compare with")
    parser.add_argument("--only", nargs="+", default=["startup", "standard", "zoo", "memory"])
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure and side (startup: 5 at least)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    sides = {"previous": args.previous.resolve(), "new": ROOT}
    results: dict[str, dict[str, list[dict]]] = {}
    for name in args.only:
        repeat = max(args.repeat, 5) if name == "startup" else args.repeat
        for i in range(repeat):
            for side, root in sides.items():  # interleaved: slow drift hits both sides alike
                run = measured(lambda name=name, side=side, root=root: one_run(name, side, root))
                results.setdefault(name, {}).setdefault(side, []).append(run)
                extra = f", index {run['index_seconds']:.2f}s" if "index_seconds" in run else ""
                print(
                    f"{name} {side} run {i + 1}: {run['seconds']:.1f}s, peak RSS {run['peak_rss_mb'] / 1024:.2f} GB, "
                    f"{run['artefacts_ok']} artefacts, other CPU {run.get('foreign_cpu_s', 0):.1f}s{extra}",
                    flush=True,
                )
    print("\nmedians (previous → new):")
    for name, by_side in results.items():
        cells = []
        for key, unit, scale in (("seconds", "s", 1), ("peak_rss_mb", "GB", 1 / 1024), ("index_seconds", "s", 1)):
            values = {s: [r[key] for r in runs if r.get(key) is not None] for s, runs in by_side.items()}
            if all(values.values()):
                old, new = (statistics.median(values[s]) * scale for s in ("previous", "new"))
                cells.append(f"{key} {old:.2f}{unit} → {new:.2f}{unit}")
        print(f"  {name}: " + "; ".join(cells))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
