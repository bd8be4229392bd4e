"""Where the product's time goes: the standard sweep run in-process with every stage timed.

    python benchmarks/profile_sweep.py                    # standard sweep, torch's default threads
    python benchmarks/profile_sweep.py --threads 1 --render-workers 1
    python benchmarks/profile_sweep.py --quick            # alexnet, first+last layer, one photo
    python benchmarks/profile_sweep.py --pyinstrument /tmp/main-thread.txt   # plus a main-thread profile

The engine runs unchanged; only its module-level names are wrapped with timers (model loading, the forward of
``Session``, each batched backward, the figure functions that run on the render threads, PNG encoding and the
atomic file write), and the time the main thread spends blocked in ``Writer.submit`` waiting for a render slot.
Afterwards the PNG encoder is timed on one real picture per method at several zlib levels, and the cost of
starting the CLI (interpreter, imports) is measured in a fresh process.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(HERE), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch  # noqa: E402
from bench import photo  # noqa: E402


class Timers:
    """Thread-safe totals of wall and thread-CPU seconds per stage."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def add(self, stage: str, wall: float, cpu: float) -> None:
        with self.lock:
            self.wall[stage] += wall
            self.cpu[stage] += cpu
            self.calls[stage] += 1

    def wrap(self, stage, fn):
        """``fn`` with its wall and thread-CPU time added to ``stage`` (a string or a callable of the args)."""

        def timed(*args, **kwargs):
            w0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                name = stage(*args, **kwargs) if callable(stage) else stage
                self.add(name, time.perf_counter() - w0, time.thread_time() - c0)

        return timed


SAMPLES: dict[str, object] = {}


def instrument(timers: Timers) -> None:
    """Wrap the engine's collaborators in place (this process only; nothing on disk changes)."""
    import pipeline.engine.model_run as model_run
    import pipeline.engine.shared as shared
    import pipeline.engine.sweep as sweep
    import pipeline.output.files as files
    import pipeline.output.writer as writer
    from pipeline.methods.feature_maps import FeatureMapsMethod
    from pipeline.methods.filters import FiltersMethod

    sweep.load_model = timers.wrap("load: load_model (background thread)", sweep.load_model)
    FiltersMethod.for_layer = timers.wrap("main: filters (select)", FiltersMethod.for_layer)
    FeatureMapsMethod.for_layer_batch = timers.wrap("main: feature_maps (select)", FeatureMapsMethod.for_layer_batch)
    session = shared.GraphSession
    session.__init__ = timers.wrap("main: forward (GraphSession)", session.__init__)
    session.input_grads = timers.wrap("main: backward (GraphSession.input_grads)", session.input_grads)
    sweep.Writer.submit = timers.wrap("main: blocked in Writer.submit", sweep.Writer.submit)

    original = model_run.draw

    def figure(picture, header, *args, **kwargs):
        image = original(picture, header, *args, **kwargs)
        SAMPLES.setdefault(header[0].split(" · ")[1], image)
        return image

    model_run.draw = timers.wrap("render: draw (compose a picture)", figure)

    write_bytes = files.write_bytes
    files.write_bytes = timers.wrap("render: file write + fsync", write_bytes)
    # write_png = encode + write_bytes; the encode share is the difference, reported below.
    writer.write_png = timers.wrap("render: write_png (encode + write)", writer.write_png)


def run_sweep(quick: bool, render_workers: int, png_compression: int) -> float:
    """Compose the standard sweep as ``python run.py`` would and run the engine in this process."""
    from hydra import compose, initialize_config_dir

    from pipeline.config import register_configs, settings_from
    from pipeline.engine import run
    from pipeline.plan import make_plan

    register_configs()

    photos = [photo("grace_hopper")] if quick else [photo("chelsea"), photo("grace_hopper")]
    overrides = [
        "experiment=standard_sweep",
        f"images=[{','.join(str(p) for p in photos)}]",
        f"render_workers={render_workers}",
        f"png_compression={png_compression}",
    ]
    if quick:
        overrides += ["models=[alexnet]", "layers=[first,last]"]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    settings = settings_from(cfg)
    plan = make_plan(settings)
    with tempfile.TemporaryDirectory(prefix="fmi-profile-") as out:
        started = time.perf_counter()
        summary = run(settings, plan, Path(out))
        wall = time.perf_counter() - started
    print(f"engine: {summary.ok} of {summary.planned} artefacts in {wall:.2f}s", flush=True)
    return wall


def encode_costs(levels: tuple[int, ...] = (0, 1, 3, 6)) -> list[str]:
    """Encode one real picture per method at several zlib levels, with the product's encoder (rows unfiltered)
    and with Pillow's (adaptive row filters): milliseconds per PNG and its size."""
    from pipeline.output.files import encode_png

    def pillow(image, level: int) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=level)
        return buffer.getvalue()

    lines = []
    for name, image in SAMPLES.items():
        for label, encode in (("product", encode_png), ("pillow", pillow)):
            cells = []
            for level in levels:
                runs = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    data = encode(image, level)
                    runs.append(time.perf_counter() - t0)
                cells.append(f"L{level} {min(runs) * 1000:6.1f} ms {len(data) / 1024:6.0f} KiB")
            lines.append(f"  {name:<20} {label:<8} {image.size[0]}x{image.size[1]}  " + "  ".join(cells))
    return lines


def startup_cost() -> float:
    """Seconds for a fresh interpreter to import what ``python run.py`` imports before any work."""
    code = (
        "import time; t = time.perf_counter(); import hydra, torch, torchvision, matplotlib; "
        "import pipeline.main, pipeline.engine; print(time.perf_counter() - t)"
    )
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    total = time.perf_counter() - started
    return float(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else total


def main(argv: list[str] | None = None) -> int:
    """Run the instrumented sweep and print the stage table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="alexnet, first+last layer, one photo")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--render-workers", type=int, default=2, help="the engine's render threads (default 2)")
    parser.add_argument("--png-compression", type=int, default=1, help="zlib level of the PNGs (default 1)")
    parser.add_argument("--pyinstrument", type=Path, default=None, help="write a main-thread profile here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    timers = Timers()
    instrument(timers)
    profiler = None
    if args.pyinstrument:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005)
        profiler.start()
    wall = run_sweep(args.quick, args.render_workers, args.png_compression)
    if profiler is not None:
        profiler.stop()
        args.pyinstrument.write_text(profiler.output_text(unicode=True, color=False, show_all=False))
        print(f"main-thread profile written to {args.pyinstrument}")

    print(
        f"\ntorch threads {torch.get_num_threads()}, render workers {args.render_workers}, "
        f"png_compression {args.png_compression}, engine wall {wall:.2f}s"
    )
    print(f"{'stage':<40} {'calls':>6} {'wall s':>9} {'thread CPU s':>13} {'CPU/wall':>8}")
    for stage in sorted(timers.wall, key=lambda s: (not s.startswith("main"), s)):
        w, c = timers.wall[stage], timers.cpu[stage]
        ratio = c / w if w > 0 else 0.0
        print(f"{stage:<40} {timers.calls[stage]:>6} {w:>9.2f} {c:>13.2f} {ratio:>8.2f}")
    enc = timers.wall["render: write_png (encode + write)"] - timers.wall["render: file write + fsync"]
    print(f"{'render: PNG encode (difference)':<40} {'':>6} {enc:>9.2f}")
    print("\nPNG encode of one real picture per method (best of 3):")
    print("\n".join(encode_costs()))
    print(f"\nfresh interpreter: importing hydra, torch, torchvision, matplotlib, pipeline takes {startup_cost():.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
