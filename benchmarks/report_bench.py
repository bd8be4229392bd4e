"""The report at sweep scale: the current report against the old single-page one, measured side by side.

Usage (from the repository root, with the project's virtualenv; needs chromium for the browser figures):

    python benchmarks/report_bench.py                    # 500 jobs x 40 artefacts = 20,000 artefacts
    python benchmarks/report_bench.py --jobs 100 --old-repeat 1 --json report_bench.json
    python benchmarks/report_bench.py --no-browser       # rebuild times only

It writes a synthetic sweep into a temporary folder: ``--jobs`` job folders of resnet18-like records, 40
artefacts each (filters and feature maps of its 20 conv layers, one photo per job), with real PNGs, thumbnails
and .npy files (hard links to a small pool of pictures, so 20,000 artefacts take little disk), manifest.jsonl,
run.json with top-5 predictions, config.resolved.yaml, job_status.json and Hydra's overrides.yaml. The old
report is the one at git commit 4bc84f4 (``--old-rev``), extracted with ``git archive`` into the temporary folder
and run in its own processes (both are the package ``pipeline``); each side builds its own hard-linked copy of
the sweep. Figures:

- (b) per job: the Hydra callback's rebuild after one more job ends, for each of the last ``--last`` jobs (median)
- (e) end of sweep: the callback's ``on_multirun_end`` rebuild right after the last job's
- (a) full: ``python -m pipeline.report DIR``'s work (timed inside the process: no interpreter start)
- (c) headless Chromium from launch to its first screenshot of index.html, and the peak of the summed RSS of its
  process tree (sampled every 20 ms)
- (d) the same for a model page (the depth explorer) with its first job's chunk loaded and the first layer's
  pictures and the image pickers shown (with ``--virtual-time-budget``, so that the screenshot waits for the chunk
  and the pictures; the old report has no other page: n/a)
- (b) again on a small sweep (``--small`` jobs), to show whether the per-job cost grows with the sweep

Timings only mean something on a quiet machine; ``other CPU s`` is the CPU time other processes used meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import defaultdict
from io import BytesIO
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.output.files import encode_png, encode_thumbnail, thumb_path  # noqa: E402
from pipeline.output.record import Record  # noqa: E402

OLD_REV = "4bc84f4"
MB = 1024**2
LAYERS = ["conv1"]
for _stage in range(1, 5):
    for _block in range(2):
        LAYERS += [f"layer{_stage}.{_block}.conv1", f"layer{_stage}.{_block}.conv2"]
        if _stage > 1 and _block == 0:
            LAYERS.append(f"layer{_stage}.0.downsample.0")
CHANNELS = {name: 64 * 2 ** max(0, int(name[5]) - 1) if name.startswith("layer") else 64 for name in LAYERS}

# Run in a subprocess with the report code to time as the current directory (``-c`` puts it first on sys.path).
DRIVER = r"""
import inspect, json, logging, sys, time
from pathlib import Path
logging.basicConfig(level=logging.WARNING)
from pipeline.report import build_report
from pipeline.report import callback as cb
what, folder = sys.argv[1], Path(sys.argv[2])
started = time.perf_counter()
if what == "full":
    result = build_report(folder)
elif what == "job":
    per_job = "job_dir" in inspect.signature(cb.rebuild).parameters
    result = cb.rebuild(folder, Path(sys.argv[3])) if per_job else cb.rebuild(folder)
else:
    result = cb.rebuild(folder)
print(json.dumps({"seconds": time.perf_counter() - started, "ok": result is not None}))
"""


# --- the synthetic sweep ---------------------------------------------------------------------------------------
def _picture(seed: int) -> Image.Image:
    """A product-like grid: a header band and 8 x 8 tiles of smooth, colour-mapped random fields."""
    rng = np.random.default_rng(seed)
    tile, cols = 96, 8
    coarse = rng.random((cols * cols, 6, 6))
    fields = np.stack([np.kron(c, np.ones((16, 16))) for c in coarse])  # [64, 96, 96], blocky but smooth enough
    rgb = np.stack([np.sin(3 * fields + k) * 0.5 + 0.5 for k in (0.0, 2.0, 4.0)], -1)
    grid = np.full((40 + cols * (tile + 4), cols * (tile + 4), 3), 255, np.uint8)
    for i, t in enumerate(rgb):
        r, c = divmod(i, cols)
        grid[40 + r * (tile + 4) : 40 + r * (tile + 4) + tile, c * (tile + 4) : c * (tile + 4) + tile] = t * 255
    image = Image.fromarray(grid)
    ImageDraw.Draw(image).text((6, 6), f"resnet18 · synthetic picture {seed} · random init (seed 0)", fill=(0, 0, 0))
    return image


class Sweep:
    """Writes job folders into one or more sweep folders; pictures are hard links to a pool written once."""

    def __init__(self, pool_dir: Path, folders: list[Path], pool_size: int = 8) -> None:
        self.folders = folders
        self.pool = []
        pool_dir.mkdir(parents=True)
        npy = BytesIO()
        np.save(npy, np.zeros((64, 56, 56), np.float32))
        (pool_dir / "raw.npy").write_bytes(npy.getvalue())
        for i in range(pool_size):
            image = _picture(i)
            (pool_dir / f"{i}.png").write_bytes(encode_png(image, 1))
            (pool_dir / f"{i}.jpg").write_bytes(encode_thumbnail(image))
            self.pool.append((pool_dir / f"{i}.png", pool_dir / f"{i}.jpg"))
        self.raw = pool_dir / "raw.npy"

    def records(self, n: int) -> list[Record]:
        label = f"photo_{n:04d}"
        out = []
        for index, layer in enumerate(LAYERS):
            for method, image in (("filters", None), ("feature_maps", f"/photos/{label}.jpg")):
                stem = layer if image is None else f"{layer}__{label}"
                png = f"resnet18/{method}/{stem}.png"
                record = Record(
                    model="resnet18",
                    weights="random init (seed 0)",
                    random_weights=True,
                    layer=layer,
                    layer_index=index,
                    method=method,
                    image=image,
                    image_label=None if image is None else label,
                    params={"tile_px": 96} if image is None else {"tile_px": 96, "max_channels": 64},
                    extra={"channels": CHANNELS[layer]},
                )
                out.append(record.done(png, png.replace(".png", ".npy"), thumb_path(png)))
        return out

    def job(self, n: int) -> None:
        """Job ``n`` in every folder, as the engine and the Hydra callback leave it."""
        records = self.records(n)
        label = f"photo_{n:04d}"
        overrides = ["models=resnet18", "weights=none", "layers=all", "methods=[filters,feature_maps]"]
        overrides.append(f"images=[/photos/{label}.jpg]")
        config = {
            "models": ["resnet18"],
            "weights": "none",
            "layers": "all",
            "methods": ["filters", "feature_maps"],
            "images": [f"/photos/{label}.jpg"],
            "device": "cpu",
            "batch_size": 4,
            "save_raw": True,
            "filters": {"tile_px": 96, "max_filters": 64},
            "feature_maps": {"tile_px": 96, "max_channels": 64, "colormap": "viridis"},
            "render": {"font_px": 12, "workers": 2, "png_compression": 1},
            "report": True,
        }
        top5 = [{"class_index": 281 + k, "class_name": f"class {281 + k}", "prob": 0.3 / (k + 1)} for k in range(5)]
        run = {
            "status": "finished",
            "config": config,
            "device": "cpu",
            "counts": {"planned": len(records), "ok": len(records), "failed": 0},
            "failures": [],
            "predictions": {"resnet18": {label: top5}},
            "seconds": 12.3,
        }
        manifest = "".join(json.dumps(r.to_json()) + "\n" for r in records)
        for folder in self.folders:
            job = folder / str(n)
            for i, r in enumerate(records):
                png, thumb = self.pool[(n + i) % len(self.pool)]
                for source, target in ((png, r.png), (thumb, r.thumb), (self.raw, r.raw)):
                    (job / target).parent.mkdir(parents=True, exist_ok=True)
                    os.link(source, job / target)
            (job / ".hydra").mkdir()
            (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
            (job / "config.resolved.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            (job / "run.json").write_text(json.dumps(run, indent=2))
            (job / "manifest.jsonl").write_text(manifest)
            (job / "job_status.json").write_text(json.dumps({"status": "COMPLETED", "overrides": overrides}))


# --- timing ----------------------------------------------------------------------------------------------------
def _busy_cpu_seconds() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def drive(code: Path, what: str, *args: Path) -> dict:
    """Run DRIVER with ``code`` as the report's source tree; its own timing plus other processes' CPU meanwhile."""
    busy, own = _busy_cpu_seconds(), _children_cpu_seconds()
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, what, *map(str, args)], cwd=code, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} in {code} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["ok"]:
        raise RuntimeError(f"{what} in {code} logged an error:\n{done.stderr[-3000:]}")
    result["other_cpu_s"] = max(0.0, _busy_cpu_seconds() - busy - (_children_cpu_seconds() - own))
    return result


def _process_tree(root: int) -> list[int]:
    kids: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            kids[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        tree.append(stack.pop())
        stack.extend(kids.get(tree[-1], ()))
    return tree


def _memory(pids: list[int]) -> dict[str, float]:
    """MB summed over ``pids``: RSS (counts shared pages once per process), PSS (shares them out); and the
    largest single RSS (what ``/usr/bin/time -v`` reports as maximum resident set size)."""
    found = {"rss_sum": 0.0, "pss_sum": 0.0, "rss_max": 0.0}
    for pid in pids:
        with contextlib.suppress(OSError):  # gone meanwhile
            rollup = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
            rss, pss = (int(rollup[k].split()[0]) / 1024 for k in ("Rss", "Pss"))
            found["rss_sum"] += rss
            found["pss_sum"] += pss
            found["rss_max"] = max(found["rss_max"], rss)
    return found


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browse(url: str, shot: Path, profile: Path, timeout: float = 600, extra: tuple[str, ...] = ()) -> dict:
    """Headless Chromium from launch to its screenshot of ``url``: seconds, and the peaks of its process tree's
    memory (see _memory), sampled every 20 ms."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    flags += ["--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]
    flags += [f"--screenshot={shot}", "--window-size=1200,900", *extra]
    peak: dict[str, float] = defaultdict(float)
    stop = threading.Event()
    started = time.perf_counter()
    process = subprocess.Popen(
        [chromium(), *flags, url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )

    def sample() -> None:
        while not stop.is_set():
            for key, value in _memory(_process_tree(process.pid)).items():
                peak[key] = max(peak[key], value)
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the browser and every process it started
        process.wait()
    finally:
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
        shutil.rmtree(profile, ignore_errors=True)
    colours = len(Image.open(shot).convert("RGB").getcolors(1 << 24) or []) if shot.is_file() else 0
    return {
        "seconds": seconds,
        **{f"peak_{k}_mb": v for k, v in peak.items()},
        "colours": colours,
        "timed_out": seconds >= timeout,
    }


# Headless Chromium's screenshot does not wait for a script chunk loaded after parsing, nor for the pictures it
# adds: with this flag it waits until loading is done (virtual time only runs while nothing is loading).
OPENED_WAIT = "--virtual-time-budget=3000"


def opened_copy(page: Path) -> Path:
    """A copy of a model page, beside it, whose pictures in view (the first layer of the first job, as the
    depth explorer opens it, and the image pickers) load eagerly, so the screenshot waits for them (lazy ones may
    come after it: the screen would be timed without its pictures). The other layers' pictures stay lazy and
    hidden, as on the page itself.

    Not ``#j-0``: headless Chromium's screenshot of a page scrolled to a fragment is blank.
    """
    script = (
        "<script>var chunk=FMI.chunk;FMI.chunk=function(data){chunk(data);[].forEach.call("
        'document.querySelectorAll("section.layer:not([hidden]) img, .pick img"),function(i){i.loading="eager";});};'
        "</script></body>"
    )
    copy = page.with_name("bench-opened.html")
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", script), encoding="utf-8")
    return copy


# --- the figures -----------------------------------------------------------------------------------------------
def extract_old(rev: str, into: Path) -> Path:
    """The ``pipeline`` package at ``rev`` (read from git, nothing checked out) under ``into``."""
    data = subprocess.run(["git", "archive", rev, "pipeline"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as archive:
        archive.extractall(into, filter="data")
    return into


def size_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / MB
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / MB if path.is_dir() else 0.0


def median(runs: list[dict], key: str = "seconds") -> float:
    return statistics.median(r[key] for r in runs)


def rebuilds(sides: dict[str, tuple[Path, Path]], sweep: Sweep, first: int, last: int, repeat: int) -> dict:
    """Per side: full build of jobs [0, first), then (b) one job at a time up to ``last``, (e), (a)."""
    out: dict[str, dict] = {}
    for n in range(first):
        sweep.job(n)
    for code, folder in sides.values():
        drive(code, "full", folder)  # the report as it stood before the last jobs ended
    for n in range(first, last):
        sweep.job(n)
        for side, (code, folder) in sides.items():
            out.setdefault(side, {}).setdefault("per_job", []).append(drive(code, "job", folder, folder / str(n)))
    for side, (code, folder) in sides.items():
        out[side]["end"] = [drive(code, "end", folder)]
        out[side]["full"] = [drive(code, "full", folder) for _ in range(repeat)]
    return out


def browser_figures(results: dict, sides: dict[str, tuple[Path, Path]], tmp: Path, args: argparse.Namespace) -> None:
    """(c) and (d), plus the browser alone on about:blank for scale, all into ``results``."""
    pages = {"blank": ("new", "about:blank", ())}
    for side, (_, folder) in sides.items():
        pages[f"{side} index"] = (side, (folder / "index.html").as_uri(), ())
    model = opened_copy(sides["new"][1] / "report" / "models" / "resnet18.html").as_uri()
    pages["new model page"] = ("new", model, (OPENED_WAIT,))
    for label, (side, url, extra) in pages.items():
        runs = results.setdefault("browser", {}).setdefault(label, [])
        for r in range(args.old_repeat if side == "old" else args.repeat):
            load = os.getloadavg()[0]
            run = browse(url, tmp / f"{label.replace(' ', '-')}-{r}.png", tmp / f"profile-{r}", extra=extra)
            runs.append({**run, "loadavg_before": load})
            print(f"  {label} run {r + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in run.items()), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs in the big sweep (40 artefacts each)")
    parser.add_argument("--small", type=int, default=50, help="jobs in the small sweep (per-job figure only)")
    parser.add_argument("--last", type=int, default=3, help="jobs whose per-job rebuild is timed (median)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the full rebuild and of new browser figures")
    parser.add_argument("--old-repeat", type=int, default=1, help="runs of the old report in the browser (slow)")
    parser.add_argument("--old-rev", default=OLD_REV, help="git revision of the old report")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium figures")
    parser.add_argument("--keep", type=Path, default=None, help="build in this new folder and keep it")
    parser.add_argument("--json", type=Path, default=None, help="also write every run here")
    args = parser.parse_args(argv)

    if args.keep:
        args.keep.mkdir(parents=True)
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="report_bench_"))
    try:
        old_code = extract_old(args.old_rev, tmp / "old_code")
        print(f"# report benchmark  {time.strftime('%Y-%m-%d %H:%M')}  load {os.getloadavg()[0]:.2f}  in {tmp}")
        results: dict = {"jobs": args.jobs, "small_jobs": args.small, "old_rev": args.old_rev}
        for name, jobs in (("small", args.small), ("big", args.jobs)):
            if jobs <= 0:
                continue
            sides = {"old": (old_code, tmp / f"{name}_old"), "new": (ROOT, tmp / f"{name}_new")}
            sweep = Sweep(tmp / f"{name}_pool", [folder for _, folder in sides.values()])
            started = time.perf_counter()
            results[name] = rebuilds(sides, sweep, max(1, jobs - args.last), jobs, args.repeat)
            print(f"# {name} sweep: {jobs} jobs built and timed in {time.perf_counter() - started:.0f} s", flush=True)
        for side, (_, folder) in sides.items():
            results[name][side]["sizes_mb"] = {
                key: size_mb(folder / key) for key in ("index.html", "index.jsonl", "report")
            }
        if not args.no_browser and chromium():
            browser_figures(results, sides, tmp, args)
        print(table(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def table(results: dict) -> str:
    """Old against new, one figure a row (medians)."""
    big, jobs = results["big"], results["jobs"]
    lines = [f"\n{'figure':<66} {'old':>12} {'new':>12}", "-" * 92]

    def row(what: str, cells: list[str]) -> None:
        lines.append(f"{what:<66} {cells[0]:>12} {cells[1]:>12}")

    def secs(part: dict, key: str) -> list[str]:
        return [f"{median(part[s][key]):.3f} s" for s in ("old", "new")]

    row(f"(b) rebuild after one job, {jobs} jobs (median of {len(big['new']['per_job'])})", secs(big, "per_job"))
    if "small" in results:
        row(f"(b) rebuild after one job, {results['small_jobs']} jobs", secs(results["small"], "per_job"))
    row(f"(e) end-of-sweep rebuild after the last job, {jobs} jobs", secs(big, "end"))
    row(f"(a) full rebuild, python -m pipeline.report, {jobs} jobs", secs(big, "full"))
    for key in ("index.html", "index.jsonl", "report"):
        row(f"size of {key}", [f"{big[s]['sizes_mb'][key]:.2f} MB" for s in ("old", "new")])
    browser = results.get("browser", {})
    for what, old, new in (
        ("(c) index.html", "old index", "new index"),
        ("(d) a model page, first job's first layer shown", None, "new model page"),
        ("    the browser alone, about:blank", None, "blank"),
    ):
        runs = [browser.get(old) if old else None, browser.get(new)]
        row(f"{what}: Chromium to first screenshot", [f"{median(r):.2f} s" if r else "n/a" for r in runs])
        row(
            "    peak PSS, whole process tree", [f"{median(r, 'peak_pss_sum_mb'):.0f} MB" if r else "n/a" for r in runs]
        )
        row("    peak RSS, largest process", [f"{median(r, 'peak_rss_max_mb'):.0f} MB" if r else "n/a" for r in runs])
        row(
            "    peak RSS summed over the tree",
            [f"{median(r, 'peak_rss_sum_mb'):.0f} MB" if r else "n/a" for r in runs],
        )
    other = [
        r.get("other_cpu_s", 0.0)
        for part in (big, results.get("small", {}))
        for side in part.values()
        if isinstance(side, dict)
        for key in ("per_job", "full", "end")
        for r in side.get(key, [])
    ]
    lines.append(f"(other processes used up to {max(other, default=0):.1f} CPU s during one measurement)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
