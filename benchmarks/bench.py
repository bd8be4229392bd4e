"""Benchmark Filter-Map-Insights against a naive seed-style implementation and against the compute floor.

Usage (from the repository root, with the project's virtualenv):

    python benchmarks/bench.py                       # everything, medians over 3 runs
    python benchmarks/bench.py --repeat 5 --json bench.json
    python benchmarks/bench.py --only standard.product,standard.floor
    python benchmarks/bench.py --quick               # tiny smoke for CI (alexnet, first+last layer, one photo)

Figures (``--only`` takes figure names or their group: standard, densenet, memory):

- standard.product  the product's CLI in its own process, as a user runs it:
                    ``python run.py experiment=standard_sweep images=[chelsea,grace_hopper] hydra.run.dir=<tmp>``
- standard.naive    the same PNGs made the seed way (benchmarks/naive.py), inside this process
- standard.floor    the least forward/backward arithmetic the sweep needs (benchmarks/floor.py), no rendering:
                    one forward per model, per layer k backward calls each batched over the images
- standard.floor_vmap  the same arithmetic with one is_grads_batched backward per layer; product/floor uses
                    whichever of these two floors is lower
- standard.floor_nhwc  diagnostic: the loop floor with model and input in channels_last layout
- standard.compute  diagnostic: the product's own method code (Session etc.) in-process, no rendering
- densenet.product  CLI: filters + feature maps of all 200 conv layers of densenet201, one photo
- densenet.naive    the same the seed way
- memory.first / memory.half / memory.all
                    CLI peak RSS of efficientnet_b7, filters + feature maps + overview, 4 photos, 1 / half / all conv layers

Runs are interleaved (run 1 of every figure, then run 2, ...) so slow drift of the machine hits all figures
alike. Every product run gets a fresh temporary ``hydra.run.dir``, deleted afterwards unless ``--keep``.
Timings from a busy machine mean little (on 2 cores one competing process slowed the product 4-5x): every run
records the CPU seconds other processes used meanwhile ("other CPU s") and such runs are flagged NOISY.
The exit status is 1 when a run failed, else 0; targets are reported, not enforced.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

import torch  # noqa: E402
from floor import compute_floor, product_compute  # noqa: E402
from naive import naive_sweep  # noqa: E402

GB = 1024**3
STANDARD_METHODS = ["filters", "feature_maps", "guided_backprop"]
MAP_METHODS = ["filters", "feature_maps"]
TARGETS = {
    "standard_speedup_vs_naive": 5.0,
    "standard_product_over_floor": 1.5,
    "densenet_speedup_vs_naive": 20.0,
    "memory_peak_rss_gb": 3.0,
    "memory_flat_all_over_first": 1.15,
}


# --- inputs ----------------------------------------------------------------------------------------------------
def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"bench: package {package!r} is not installed (needed for its sample photos)")
    return Path(spec.origin).parent


def photo(name: str) -> Path:
    """A sample photo shipped with matplotlib (grace_hopper) or scikit-image (chelsea, coffee, astronaut)."""
    if name == "grace_hopper":
        path = _package_dir("matplotlib") / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    else:
        path = _package_dir("skimage") / "data" / f"{name}.png"
    if not path.is_file():
        raise SystemExit(f"bench: sample photo {path} is missing")
    return path


def hydra_list(items: list) -> str:
    """A Hydra list override value with every item quoted, e.g. ['a.png','b.png']."""
    quoted = []
    for item in items:
        text = str(item).replace("\\", "\\\\").replace("'", "\\'")
        quoted.append(f"'{text}'")
    return "[" + ",".join(quoted) + "]"


# --- machine ---------------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / GB, 1)
    except OSError:
        pass
    return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def machine() -> dict:
    """Date, CPU, memory, library versions and thread counts: what a timing means depends on them."""
    import torchvision

    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "mem_total_gb": _mem_total_gb(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "loadavg_start": list(os.getloadavg()),
    }


def _busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measured(fn: Callable[[], dict]) -> dict:
    """Run ``fn`` and add ``foreign_cpu_s``: CPU time other processes took meanwhile (0 on a quiet machine)."""
    busy, own = _busy_cpu_seconds(), _own_cpu_seconds()
    result = fn()
    after = _busy_cpu_seconds()
    if busy is not None and after is not None:
        result["foreign_cpu_s"] = max(0.0, (after - busy) - (_own_cpu_seconds() - own))
    return result


# --- running things --------------------------------------------------------------------------------------------
# A tiny stdlib-only parent for each product run: a child forked from this (large, torch-laden) benchmark
# process would inherit its high-water RSS through fork + exec, so ru_maxrss is read one level down instead.
_LAUNCHER = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
    "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "open(sys.argv[1], 'w').write(f'{u.ru_maxrss} {u.ru_utime + u.ru_stime}'); sys.exit(rc)"
)


CLI_EXTRA: list[str] = []  # --cli-extra overrides, appended to every product run (A/B experiments only)
CLI_ENV: dict[str, str] = {}  # --threads N: OMP/MKL thread counts for product runs


def run_cli(overrides: list[str], keep: bool, root: Path = ROOT) -> dict:
    """``python run.py <overrides> hydra.run.dir=<tmp>`` in a fresh process (in the checkout ``root``): wall time,
    peak RSS, PNG count."""
    out = Path(tempfile.mkdtemp(prefix="fmi-bench-"))
    command = [sys.executable, "run.py", *overrides, *CLI_EXTRA, f"hydra.run.dir={out / 'run'}"]
    log, usage = out / "stdout-stderr.txt", out / "rusage.txt"
    try:
        with open(log, "wb") as handle:
            started = time.perf_counter()
            code = subprocess.call(
                [sys.executable, "-I", "-c", _LAUNCHER, str(usage), *command],
                cwd=root,
                env={**os.environ, **CLI_ENV},
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
            seconds = time.perf_counter() - started
        if code != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"product run failed (exit {code}): {' '.join(command)}\n{tail}")
        max_rss_kb, cpu_seconds = usage.read_text().split()
        info = json.loads((out / "run" / "run.json").read_text())
        return {
            "seconds": seconds,
            "engine_seconds": info.get("seconds"),
            "peak_rss_mb": int(max_rss_kb) / 1024,  # Linux reports kilobytes
            "cpu_seconds": float(cpu_seconds),
            "pngs": sum(1 for _ in (out / "run").rglob("*.png")),
            "artefacts_ok": info.get("counts", {}).get("ok"),
            "command": " ".join(command),
            "run_dir": str(out / "run"),
            **({"kept": str(out)} if keep else {}),
        }
    finally:
        if not keep:
            shutil.rmtree(out, ignore_errors=True)


def run_naive(models: list[str], photos: list[Path], methods: list[str], layers, keep: bool) -> dict:
    """The seed-style sweep in this process, PNGs into a temporary folder."""
    out = Path(tempfile.mkdtemp(prefix="fmi-naive-"))
    try:
        result = naive_sweep(models, photos, methods, out, layers)
        result["pngs_on_disk"] = sum(1 for _ in out.rglob("*.png"))
        if keep:
            result["kept"] = str(out)
        return result
    finally:
        if not keep:
            shutil.rmtree(out, ignore_errors=True)


@dataclass
class Figure:
    """One timed thing: how to run it once, and what it means."""

    name: str
    what: str
    run: Callable[[], dict]
    naive: bool = False
    runs: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def group(self) -> str:
        return self.name.split(".", 1)[0]

    def median(self, key: str) -> float | None:
        values = [r[key] for r in self.runs if r.get(key) is not None]
        return statistics.median(values) if values else None


@dataclass(frozen=True)
class Workloads:
    """What each group sweeps; ``--quick`` shrinks all of them."""

    standard_models: list[str]
    standard_layers: object
    standard_photos: list[Path]
    densenet_model: str
    densenet_layers: object
    densenet_photos: list[Path]
    memory_model: str
    memory_photos: list[Path]
    memory_sets: tuple[str, ...]


def workloads(quick: bool) -> Workloads:
    """The full benchmark, or a seconds-long smoke of the same code paths."""
    grace = photo("grace_hopper")
    if quick:
        first_last = ("first", "last")
        return Workloads(
            ["alexnet"], first_last, [grace], "alexnet", first_last, [grace], "alexnet", [grace], ("first", "all")
        )
    chelsea = photo("chelsea")
    four = [grace, chelsea, photo("coffee"), photo("astronaut")]
    return Workloads(
        ["alexnet", "vgg16", "resnet18"],
        "all",
        [chelsea, grace],
        "densenet201",
        "all",
        [grace],
        "efficientnet_b7",
        four,
        ("first", "half", "all"),
    )


def _layers_override(layers) -> str:
    return "layers=all" if layers == "all" else f"layers={hydra_list(list(layers))}"


def conv_count(model: str) -> int:
    """How many conv layers the product sees in ``model`` (meta-device build, no memory)."""
    from pipeline.plan import skeleton_layers

    return len(skeleton_layers(model))


def figures(w: Workloads, quick: bool, keep: bool) -> list[Figure]:
    """Every figure of the benchmark, in run order."""
    std_cli = ["experiment=standard_sweep", f"images={hydra_list(w.standard_photos)}"]
    if quick:
        std_cli += [f"models={hydra_list(w.standard_models)}", _layers_override(w.standard_layers)]
    dense_cli = [
        f"models={w.densenet_model}",
        "weights=none",
        _layers_override(w.densenet_layers),
        "methods=[filters,feature_maps]",
        f"images={hydra_list(w.densenet_photos)}",
    ]
    n = conv_count(w.memory_model)
    layer_sets = {"first": ["first"], "half": list(range(max(1, n // 2))), "all": "all"}
    layer_sets = {k: v for k, v in layer_sets.items() if k in w.memory_sets}
    mem_base = [
        f"models={w.memory_model}",
        "weights=none",
        "methods=[filters,feature_maps,overview]",
        f"images={hydra_list(w.memory_photos)}",
    ]
    figs = [
        Figure("standard.product", "CLI experiment=standard_sweep (whole process)", lambda: run_cli(std_cli, keep)),
        Figure(
            "standard.naive",
            "seed-style matplotlib + per-target forward/backward",
            lambda: run_naive(w.standard_models, w.standard_photos, STANDARD_METHODS, w.standard_layers, keep),
            naive=True,
        ),
        Figure(
            "standard.floor",
            "floor: 1 forward/model, k backwards/layer (loop)",
            lambda: compute_floor(w.standard_models, w.standard_photos, w.standard_layers, strategy="loop"),
        ),
        Figure(
            "standard.floor_vmap",
            "floor: 1 forward/model, 1 is_grads_batched/layer",
            lambda: compute_floor(w.standard_models, w.standard_photos, w.standard_layers, strategy="vmap"),
        ),
        Figure(
            "standard.floor_nhwc",
            "diagnostic: loop floor in channels_last layout",
            lambda: compute_floor(
                w.standard_models, w.standard_photos, w.standard_layers, strategy="loop", channels_last=True
            ),
        ),
        Figure(
            "standard.compute",
            "diagnostic: product's Session/methods in-process, no rendering",
            lambda: product_compute(w.standard_models, w.standard_photos, w.standard_layers),
        ),
        Figure(
            "densenet.product",
            f"CLI {w.densenet_model} filters+feature_maps, {len(w.densenet_photos)} photo",
            lambda: run_cli(dense_cli, keep),
        ),
        Figure(
            "densenet.naive",
            f"seed-style {w.densenet_model} filters+feature_maps",
            lambda: run_naive([w.densenet_model], w.densenet_photos, MAP_METHODS, w.densenet_layers, keep),
            naive=True,
        ),
    ]
    for label, layers in layer_sets.items():
        count = 1 if label == "first" else n if layers == "all" else len(layers)
        cli = [*mem_base, _layers_override(layers)]
        figs.append(
            Figure(
                f"memory.{label}",
                f"CLI {w.memory_model} peak RSS, {count} layer(s), {len(w.memory_photos)} photos, with overview",
                lambda cli=cli: run_cli(cli, keep),
            )
        )
    return figs


def select(figs: list[Figure], only: list[str] | None) -> list[Figure]:
    """Keep figures named in ``only`` (exact names or group names)."""
    if not only:
        return figs
    known = {f.name for f in figs} | {f.group for f in figs}
    unknown = [o for o in only if o not in known]
    if unknown:
        raise SystemExit(f"bench: unknown --only name(s) {unknown}; known: {', '.join(sorted(known))}")
    return [f for f in figs if f.name in only or f.group in only]


# --- report ----------------------------------------------------------------------------------------------------
def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def ratios(figs: dict[str, Figure]) -> list[dict]:
    """Product/naive, product/floor and memory checks from the medians (only where both sides ran)."""

    def med(name: str, key: str = "seconds") -> float | None:
        return figs[name].median(key) if name in figs else None

    checks = []
    product, naive = med("standard.product"), med("standard.naive")
    floors = {n: med(n) for n in ("standard.floor", "standard.floor_vmap") if med(n)}
    floor_name = min(floors, key=floors.get) if floors else None
    floor = floors.get(floor_name)
    engine, compute = med("standard.product", "engine_seconds"), med("standard.compute")
    if product and naive:
        checks.append(
            {
                "check": "standard: naive/product speedup",
                "value": naive / product,
                "product_over_naive": product / naive,
                "target": f">= {TARGETS['standard_speedup_vs_naive']}x",
                "ok": naive / product >= TARGETS["standard_speedup_vs_naive"],
            }
        )
    if product and floor:
        checks.append(
            {
                "check": f"standard: product/floor (whole CLI; {floor_name.split('.')[1]})",
                "value": product / floor,
                "target": f"<= {TARGETS['standard_product_over_floor']}",
                "ok": product / floor <= TARGETS["standard_product_over_floor"],
            }
        )
    if engine and floor:
        checks.append({"check": "standard: engine-only/floor (run.json seconds)", "value": engine / floor})
    nhwc = med("standard.floor_nhwc")
    if product and nhwc:
        checks.append({"check": "standard: product/floor_nhwc (whole CLI)", "value": product / nhwc})
    if len(floors) == 2:
        checks.append(
            {"check": "standard: floor vmap/loop", "value": floors["standard.floor_vmap"] / floors["standard.floor"]}
        )
    if compute and floor:
        checks.append({"check": "standard: product compute/floor (no rendering)", "value": compute / floor})
    for group in ("standard", "densenet"):
        made = {side: med(f"{group}.{side}", "pngs") for side in ("product", "naive")}
        if None not in made.values() and made["product"] != made["naive"]:
            checks.append(
                {"check": f"{group}: PNG count naive/product (should be 1)", "value": made["naive"] / made["product"]}
            )
    dp, dn = med("densenet.product"), med("densenet.naive")
    if dp and dn:
        checks.append(
            {
                "check": "densenet: naive/product speedup",
                "value": dn / dp,
                "product_over_naive": dp / dn,
                "target": f">= {TARGETS['densenet_speedup_vs_naive']}x",
                "ok": dn / dp >= TARGETS["densenet_speedup_vs_naive"],
            }
        )
    rss = {k: med(f"memory.{k}", "peak_rss_mb") for k in ("first", "half", "all")}
    if rss["all"]:
        checks.append(
            {
                "check": "memory: peak RSS, all layers (GB)",
                "value": rss["all"] * 1024**2 / GB,
                "target": f"< {TARGETS['memory_peak_rss_gb']}",
                "ok": rss["all"] * 1024**2 / GB < TARGETS["memory_peak_rss_gb"],
            }
        )
    if rss["all"] and rss["first"]:
        growth = rss["all"] / rss["first"]
        checks.append(
            {
                "check": "memory: peak RSS all/first layers (flat)",
                "value": growth,
                "target": f"<= {TARGETS['memory_flat_all_over_first']}",
                "ok": growth <= TARGETS["memory_flat_all_over_first"],
                "rss_mb": rss,
            }
        )
    return checks


def table(figs: list[Figure]) -> str:
    """A fixed-width table of medians, one row per figure."""
    head = f"{'figure':<20} {'runs':>4} {'median s':>9} {'min s':>8} {'max s':>8} {'engine s':>9} {'peak RSS MB':>11} {'PNGs':>5} {'other CPU s':>11}  what"
    lines = [head, "-" * len(head)]
    for f in figs:
        secs = [r["seconds"] for r in f.runs]
        pngs = f.median("pngs")
        lines.append(
            f"{f.name:<20} {len(f.runs):>4} {_fmt(f.median('seconds'), '.2f'):>9} "
            f"{_fmt(min(secs) if secs else None, '.2f'):>8} {_fmt(max(secs) if secs else None, '.2f'):>8} "
            f"{_fmt(f.median('engine_seconds'), '.2f'):>9} {_fmt(f.median('peak_rss_mb'), '.0f'):>11} "
            f"{_fmt(pngs, '.0f'):>5} {_fmt(f.median('foreign_cpu_s'), '.1f'):>11}  {f.what}"
        )
    return "\n".join(lines)


def check_lines(checks: list[dict], quick: bool) -> str:
    """One line per ratio, with its target and verdict (verdicts are meaningless for --quick)."""
    lines = []
    for c in checks:
        verdict = ""
        if "ok" in c:
            verdict = "(smoke, not judged)" if quick else ("PASS" if c["ok"] else "FAIL")
        target = f"target {c['target']}" if "target" in c else "(diagnostic)"
        lines.append(f"  {c['check']:<52} {c['value']:>8.2f}   {target:<16} {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run the figures interleaved, print the table and optionally save JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the table shows medians (default 3)")
    parser.add_argument(
        "--naive-repeat", type=int, default=None, help="runs of the slow naive figures (default: --repeat)"
    )
    parser.add_argument("--only", nargs="+", default=None, help="figure or group names, comma or space separated")
    parser.add_argument("--quick", action="store_true", help="tiny smoke of every code path (alexnet, 1 photo, 1 run)")
    parser.add_argument("--json", type=Path, default=None, help="also write every run and the summary here")
    parser.add_argument("--keep", action="store_true", help="keep every run's output folder (paths in --json)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads for every figure (in-process, and OMP/MKL_NUM_THREADS for product runs); "
        "default: torch's own choice",
    )
    parser.add_argument(
        "--cli-extra",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra overrides for every product run, for A/B experiments (e.g. render_workers=1); "
        "results are then no longer 'as a user runs it'",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        CLI_ENV.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    CLI_EXTRA.extend(args.cli_extra)
    only = [o for item in args.only or [] for o in item.split(",") if o] or None
    repeat = 1 if args.quick else max(1, args.repeat)
    naive_repeat = 1 if args.quick else max(1, args.naive_repeat or repeat)

    os.chdir(ROOT)
    meta = machine()
    figs = select(figures(workloads(args.quick), args.quick, args.keep), only)
    print(
        f"# Filter-Map-Insights benchmark {meta['date']}  {meta['cpu_model']}  nproc {meta['nproc']}  "
        f"torch {meta['torch']} ({meta['torch_threads']} threads)  load {meta['loadavg_start'][0]:.2f}"
        + ("  [--quick]" if args.quick else "")
        + (f"  cli-extra {' '.join(CLI_EXTRA)}" if CLI_EXTRA else ""),
        flush=True,
    )
    if meta["loadavg_start"][0] > 0.5 and not args.quick:
        print("# note: load average above 0.5 at start; watch the 'other CPU s' column", flush=True)
    for r in range(max(repeat, naive_repeat)):
        for f in figs:
            if r >= (naive_repeat if f.naive else repeat):
                continue
            load = os.getloadavg()[0]
            try:
                result = measured(f.run)
            except Exception as exc:  # noqa: BLE001 - report it, keep the other figures' results
                f.errors.append(f"{type(exc).__name__}: {exc}")
                print(f"  run {r + 1}: {f.name:<20} FAILED: {type(exc).__name__}: {exc}", flush=True)
                continue
            result["loadavg_before"] = load
            f.runs.append(result)
            rss = f" peak RSS {result['peak_rss_mb']:.0f} MB" if "peak_rss_mb" in result else ""
            foreign = result.get("foreign_cpu_s")
            busy = f", other processes used {foreign:.1f} CPU s" if foreign is not None else ""
            noisy = foreign is not None and foreign > 0.05 * result["seconds"]
            print(
                f"  run {r + 1}: {f.name:<20} {result['seconds']:8.2f} s{rss}  (load {load:.2f}{busy})"
                + ("  <- NOISY" if noisy else ""),
                flush=True,
            )

    checks = ratios({f.name: f for f in figs})
    meta["loadavg_end"] = list(os.getloadavg())
    print()
    print(table(figs))
    print("(other CPU s: CPU seconds other processes used during a run, median; about 0 on a quiet machine)")
    noisy = sorted({f.name for f in figs for r in f.runs if r.get("foreign_cpu_s", 0) > 0.05 * r["seconds"]})
    if noisy:
        print(f"# warning: other processes competed for the CPU during {', '.join(noisy)}; re-run on a quiet machine")
    if checks:
        print("\nratios of medians:")
        print(check_lines(checks, args.quick))
    if args.json:
        payload = {
            "machine": meta,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "targets": TARGETS,
            "figures": {
                f.name: {
                    "what": f.what,
                    "runs": f.runs,
                    "median_seconds": f.median("seconds"),
                    "median_peak_rss_mb": f.median("peak_rss_mb"),
                    "errors": f.errors,
                }
                for f in figs
            },
            "checks": checks,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"\nresults written to {args.json}")
    failed = [f.name for f in figs if f.errors]
    if failed:
        print(f"\nfailed runs in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
