"""feature_viz on efficientnet_lite0 (real weights): quality against natural photos, and against torch-lucent 0.1.8.

    python benchmarks/feature_viz_bench.py ours --steps 256 --channels 16 --json ours256.json
    python benchmarks/feature_viz_bench.py ours --steps 64 --channels 16 --json ours64.json
    python benchmarks/feature_viz_bench.py lucent --steps 256 --channels 4 --json lucent256.json
    python benchmarks/feature_viz_bench.py lucent --steps 64 --channels 16 --sample 2 --json lucent64.json
    python benchmarks/feature_viz_bench.py compare ours256.json lucent256.json
    python benchmarks/feature_viz_bench.py speed --steps 64 --channels 16 --threads 1 --json speed.json
    python benchmarks/feature_viz_bench.py profile --steps 4 --variant plain --json profile_plain.json
    python benchmarks/feature_viz_bench.py run RUN_DIR --lucent lucent256.json   # a CLI run with save_raw=true

Layers: the conv layers at 0/25/50/75/100 % of lite0's depth; channels 0…n−1 of each (``select=first``, as a
run without images picks them). ``ours`` runs the product's method through the engine's ``Finish`` view in this
process (model built once, warm), at default settings unless told; it records wall time, peak RSS, the
activation each channel reaches (its channel mean, the image resized to 224 without transforms) and the best
activation of that channel over every natural photo available offline (matplotlib's and scikit-image's colour
photos, each whole, as the model's own resize + centre crop, and as a centre half crop).

``lucent`` runs torch-lucent's ``render_vis`` once per channel (its loop; it optimises one unit per call) in
/work/benchvenv-lucent (``python3 -m venv`` + ``pip install torch==2.14.1 torchvision==0.29.1
torch-lucent==0.1.8 kornia==0.4.1 ipython``; it shares nothing with the product's venv), on the same model
(pickled here, wrapped so Lucent's ImageNet normalisation is undone into lite0's own), same layers, channels,
size 128 and standard transforms, Adam 0.05. ``--sample k`` times only k channels per layer (Lucent's cost does
not depend on the layer: it always runs the whole model). Its images are scored here exactly like ours.

``speed`` runs both in one invocation (the same period of a shared machine); ``profile`` times each stage of one
step. ``--variant`` takes one lever out of ours for the ablation (``no-malloc``, ``plain``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench import machine  # noqa: E402
from PIL import Image  # noqa: E402

MODEL = "efficientnet_lite0"
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
LUCENT_PY = Path(os.environ.get("LUCENT_VENV", "/work/benchvenv-lucent")) / "bin" / "python"


def load(every: bool = False):
    from pipeline.engine.finish import input_side
    from pipeline.methods.base import ModelInfo
    from pipeline.models import conv_layers, load_model, resolve_weights

    loaded = load_model(MODEL, resolve_weights(MODEL, "default"))
    layers = conv_layers(loaded.module)
    picked = layers if every else [layers[round(f * (len(layers) - 1))] for f in DEPTHS]
    info = ModelInfo(MODEL, (), tuple(loaded.transform.mean), tuple(loaded.transform.std))
    return loaded, picked, info, input_side(loaded.transform)


def photos() -> list[Path]:
    """Every colour photo shipped with matplotlib and scikit-image (RGB, at least 200 px each side)."""
    import skimage

    from pipeline.images import sample_images

    found = list(sample_images())
    for path in sorted((Path(skimage.__file__).parent / "data").iterdir()):
        if path.suffix.lower() not in {".png", ".jpg"} or path in found:
            continue
        with Image.open(path) as img:
            if img.mode == "RGB" and min(img.size) >= 200:
                found.append(path)
    return found


def natural_inputs(loaded, side: int) -> tuple[torch.Tensor, list[str]]:
    """Each photo whole (squeezed to side²), through the model's transform, and as a centre half crop."""
    mean = torch.tensor(loaded.transform.mean).view(3, 1, 1)
    std = torch.tensor(loaded.transform.std).view(3, 1, 1)
    views, names = [], []
    for path in photos():
        img = Image.open(path).convert("RGB")
        t = torch.from_numpy(np.asarray(img)).permute(2, 0, 1).float() / 255
        h, w = t.shape[1:]
        half = t[:, h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2]
        for name, v in (("whole", t), ("half", half)):
            v = F.interpolate(v[None], size=(side, side), mode="bilinear", align_corners=False, antialias=True)[0]
            views.append((v - mean) / std)
            names.append(f"{path.stem}:{name}")
        views.append(loaded.transform(img))
        names.append(f"{path.stem}:transform")
    return torch.stack(views), names


def channel_means(module, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """Each layer's per-channel mean [N, C] for preprocessed x, read by a hook on the conv's own output."""
    from pipeline.models.capture import run_capturing

    found = {}
    with torch.no_grad():
        run_capturing(module, x, layers, lambda n, out: found.__setitem__(n, out.mean(dim=(2, 3)).clone()))
    return found


def score(loaded, info, side, layer: str, channels: list[int], images: np.ndarray) -> list[float]:
    """The channel objective each [3, s, s] image in [0, 1] reaches, resized to side² (as the method scores)."""
    x = F.interpolate(torch.from_numpy(images).float(), size=(side, side), mode="bilinear", align_corners=False)
    x = (x - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
    means = channel_means(loaded.module, x, [layer])[layer]
    return [float(means[i, c]) for i, c in enumerate(channels)]


VARIANTS = ("product", "no-malloc", "plain")  # plain: the model itself with hooks, as before the optimising copy


def finish_class(variant: str):
    """The engine's ``Finish`` (``product``), or one with a lever taken out for the ablation: ``no-malloc``
    leaves glibc's allocator alone; ``plain`` also runs the model itself (no frozen copy, no folding, NCHW)."""
    from pipeline.engine import optforward
    from pipeline.engine.finish import Finish
    from pipeline.models.capture import run_capturing

    if variant != "product":
        optforward.keep_freed_memory = lambda: None  # this process only: the lever taken out
    if variant != "plain":
        return Finish

    class Plain(Finish):
        def features(self, x, layers):
            found = {}
            with torch.enable_grad():
                run_capturing(self.module, x, list(dict.fromkeys(layers)), lambda n, o: found.__setitem__(n, o.clone()))
            return found

    return Plain


def ours(args) -> dict:
    from pipeline.methods.feature_viz import FeatureViz, Params

    Finish = finish_class(args.variant)
    loaded, layers, info, side = load(args.all_layers)
    torch.set_grad_enabled(False)
    natural, names = natural_inputs(loaded, side)
    nat = channel_means(loaded.module, natural, [la.name for la in layers])
    torch.set_grad_enabled(True)
    method = FeatureViz(Params(max_channels=args.channels, select="first", steps=args.steps))
    steps = []

    def advance(units: int) -> None:
        steps.append(units)
        if sum(steps) % 64 < units:
            print(f"{sum(steps)} of {method.finish_cost(len(layers))} layer-steps", file=sys.stderr, flush=True)

    view = Finish(loaded.module, info, layers, {la.name: {} for la in layers}, 0, side, advance)
    start, cpu, usage = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
    outputs = method.finish(view)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    sys_s = resource.getrusage(resource.RUSAGE_SELF).ru_stime - usage.ru_stime
    rows = []
    for layer, out in zip(layers, outputs, strict=True):
        best = nat[layer.name].amax(0)
        for c, a in zip(out.fields["channels"], out.fields["activation"], strict=True):
            rows.append({"layer": layer.name, "channel": c, "activation": a, "natural_best": float(best[c])})
        if args.save:
            np.save(Path(args.save) / f"ours_{layer.name}.npy", out.array)
    ratios = [r["activation"] / r["natural_best"] for r in rows if r["natural_best"] > 0]
    beat = sum(r["activation"] > r["natural_best"] for r in rows)
    return {
        "side": "product",
        "variant": args.variant,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "channels_per_layer": args.channels,
        "layers": [la.name for la in layers],
        "natural_views": len(names),
        "wall_s": wall,
        "s_per_channel": wall / len(rows),
        "cpu_s": cpu,
        "cpu_s_per_channel": cpu / len(rows),
        "sys_s": sys_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "beat_natural": f"{beat}/{len(rows)}",
        "median_ratio": statistics.median(ratios) if ratios else None,
        "rows": rows,
        "machine": machine(),
    }


LUCENT_SCRIPT = r"""
import json, sys, time
import numpy as np, torch
from lucent.optvis import render
spec = json.loads(sys.argv[1])
inner = torch.load(spec["model"], weights_only=False).eval()
class Renorm(torch.nn.Module):  # Lucent feeds ImageNet-normalised input; lite0 wants its own normalisation
    def __init__(self, m):
        super().__init__()
        self.m = m
    def forward(self, x):
        imnet_m = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        imnet_s = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        rgb = x * imnet_s + imnet_m
        return (rgb - torch.tensor(spec["mean"]).view(1, 3, 1, 1)) / torch.tensor(spec["std"]).view(1, 3, 1, 1)
model = torch.nn.Sequential(Renorm(None), inner).eval()
images, times, cpus = [], [], []
for layer, channel in spec["jobs"]:
    name = "1_" + layer.replace(".", "_")
    t, c = time.perf_counter(), time.process_time()
    out = render.render_vis(model, f"{name}:{channel}", thresholds=(spec["steps"],), show_image=False, progress=False)
    times.append(time.perf_counter() - t)
    cpus.append(time.process_time() - c)
    images.append(out[-1][0].transpose(2, 0, 1))
    print(layer, channel, round(times[-1], 2), flush=True)
np.save(spec["out"], np.stack(images))
json.dump({"times": times, "cpus": cpus}, open(spec["out"] + ".json", "w"))
"""


def lucent(args) -> dict:
    loaded, layers, info, side = load()
    tmp = Path(tempfile.mkdtemp(prefix="fmi-lucent-"))
    torch.save(loaded.module, tmp / "model.pt")
    per_layer = args.sample or args.channels
    jobs = [(la.name, c) for la in layers for c in range(min(per_layer, la.out_channels))]
    spec = {"model": str(tmp / "model.pt"), "mean": list(info.mean), "std": list(info.std), "steps": args.steps}
    spec.update(jobs=jobs, out=str(tmp / "images.npy"))
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    subprocess.run([str(LUCENT_PY), "-c", LUCENT_SCRIPT, json.dumps(spec)], check=True, env=env)
    images = np.load(tmp / "images.npy")
    timing = json.loads((tmp / "images.npy.json").read_text())
    times, cpus = timing["times"], timing["cpus"]
    rows = []
    for layer in layers:
        idx = [i for i, (name, _) in enumerate(jobs) if name == layer.name]
        chans = [jobs[i][1] for i in idx]
        for c, a, t in zip(
            chans, score(loaded, info, side, layer.name, chans, images[idx]), [times[i] for i in idx], strict=True
        ):
            rows.append({"layer": layer.name, "channel": c, "activation": a, "time_s": t})
        if args.save:
            np.save(Path(args.save) / f"lucent_{layer.name}.npy", images[idx])
    total = args.channels * len(layers)
    return {
        "side": "lucent",
        "steps": args.steps,
        "channels_per_layer": args.channels,
        "timed_channels": len(jobs),
        "s_per_channel": statistics.mean(times),
        "cpu_s_per_channel": statistics.mean(cpus),
        "wall_s_estimated": statistics.mean(times) * total,
        "rows": rows,
        "machine": machine(),
    }


def scored_run(args) -> dict:
    """A product run's feature_viz artefacts (``save_raw=true``), scored like ``ours`` against the natural photos
    and, given ``--lucent``, against Lucent's images of the same (layer, channel)."""
    loaded, _, info, side = load()
    run = Path(args.files[0])
    records = [json.loads(line) for line in (run / "manifest.jsonl").read_text().splitlines() if line.strip()]
    records = [r for r in records if r.get("method") == "feature_viz" and r.get("status") == "ok"]
    natural, names = natural_inputs(loaded, side)
    nat = channel_means(loaded.module, natural, [r["layer"] for r in records])
    theirs = {}
    if args.lucent:
        theirs = {
            (r["layer"], r["channel"]): r["activation"] for r in json.loads(Path(args.lucent).read_text())["rows"]
        }
    rows = []
    for r in records:
        channels = r["channels"]
        again = score(loaded, info, side, r["layer"], channels, np.load(run / r["raw"]))
        best = nat[r["layer"]].amax(0)
        for c, a, a2 in zip(channels, r["activation"], again, strict=True):
            row = {"layer": r["layer"], "channel": c, "activation": a, "rescored": a2, "natural_best": float(best[c])}
            row["lucent"] = theirs.get((r["layer"], c))
            rows.append(row)
    ratios = [r["activation"] / r["natural_best"] for r in rows if r["natural_best"] > 0]
    pairs = [(r["activation"], r["lucent"]) for r in rows if r["lucent"] is not None]
    result = {
        "side": "product run",
        "run": str(run),
        "layers": [r["layer"] for r in records],
        "natural_views": len(names),
        "beat_natural": f"{sum(r['activation'] > r['natural_best'] for r in rows)}/{len(rows)}",
        "median_ratio": statistics.median(ratios) if ratios else None,
        "rows": rows,
    }
    if pairs:
        result["lucent_pairs"] = len(pairs)
        result["median_ours"] = statistics.median(a for a, _ in pairs)
        result["median_lucent"] = statistics.median(b for _, b in pairs)
        result["ours_higher"] = sum(a > b for a, b in pairs)
    return result


def profile(args) -> dict:
    """Milliseconds per image and step of each stage (parametrisation, transforms, forward to the layer, backward
    through the model, backward through transforms and parametrisation, Adam) for the 25 % and 100 % layers, by
    batch size, at the thread counts given; CPU time of this process (user + system), medians over steps."""
    from pipeline.methods import _optvis as ov
    from pipeline.methods.feature_viz import Params, Sample, objective_values

    Finish = finish_class(args.variant)
    loaded, layers, info, side = load()
    p = Params(steps=args.steps)
    rows = []
    for threads in args.profile_threads:
        torch.set_num_threads(threads)
        for layer in (layers[1], layers[-1]):
            for batch in args.batches:
                view = Finish(loaded.module, info, [layer], {}, 0, side)
                samples = []
                for c in range(batch):
                    gen = ov.generator(0, MODEL, layer.name, c, ())
                    samples.append(Sample(layer.name, c % layer.out_channels, ov.initial(gen, "fft", p.size), None))
                raw = torch.stack([s.init for s in samples]).requires_grad_(True)
                adam = torch.optim.Adam([raw], lr=p.lr)
                mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (info.mean, info.std))
                stages: dict[str, list[float]] = {}
                for step in range(args.steps + 1):
                    marks = [time.process_time()]
                    with torch.enable_grad():
                        rgb = ov.to_rgb(raw, p.param, p.size)
                        marks.append(time.process_time())
                        theta = ov.transform_theta(torch.rand(batch, 6, dtype=torch.float64), batch, p.size, side)
                        x = (ov.resample(rgb, theta, side) - mean) / std
                        marks.append(time.process_time())
                        loss = -objective_values(view.features(x, [layer.name]), samples, p.objective).sum()
                        marks.append(time.process_time())
                        (gx,) = torch.autograd.grad(loss, [x], retain_graph=True)
                        marks.append(time.process_time())
                        (raw.grad,) = torch.autograd.grad(x, [raw], gx)
                        marks.append(time.process_time())
                    adam.step()
                    marks.append(time.process_time())
                    if step:  # the first step builds the copy and warms up
                        names = ("param", "transforms", "forward", "backward_model", "backward_param", "adam")
                        for name, a, b in zip(names, marks, marks[1:], strict=False):
                            stages.setdefault(name, []).append((b - a) * 1000 / batch)
                row = {k: round(statistics.median(v), 2) for k, v in stages.items()}
                row.update(threads=threads, layer=layer.name, batch=batch, total=round(sum(row.values()), 2))
                rows.append(row)
                print(json.dumps(row), flush=True)
    return {"side": "profile", "variant": args.variant, "unit": "CPU ms per image-step", "rows": rows}


def speed(args) -> dict:
    """Both sides in one invocation, one after the other: ours on every channel, Lucent's loop (``--sample``
    channels per layer); the ratio of seconds per channel, wall and CPU."""
    mine = ours(args)
    theirs = lucent(args)
    result = {"side": "speed", "steps": args.steps, "threads": torch.get_num_threads(), "variant": args.variant}
    for key in ("s_per_channel", "cpu_s_per_channel"):
        result[f"ours_{key}"] = mine[key]
        result[f"lucent_{key}"] = theirs[key]
        result[f"ratio_{key}"] = theirs[key] / mine[key]
    result.update(ours_wall_s=mine["wall_s"], ours_cpu_s=mine["cpu_s"], ours_sys_s=mine["sys_s"])
    result.update(lucent_timed_channels=theirs["timed_channels"], ours_channels=len(mine["rows"]))
    result.update(ours_beat_natural=mine["beat_natural"], ours_peak_rss_mb=mine["peak_rss_mb"])
    result["rows"] = {"ours": mine["rows"], "lucent": theirs["rows"]}
    result["machine"] = mine["machine"]
    return result


def compare(paths: list[str]) -> dict:
    ours_run, lucent_run = (json.loads(Path(p).read_text()) for p in paths)
    theirs = {(r["layer"], r["channel"]): r["activation"] for r in lucent_run["rows"]}
    pairs = [
        (r["activation"], theirs[(r["layer"], r["channel"])])
        for r in ours_run["rows"]
        if (r["layer"], r["channel"]) in theirs
    ]
    mine, lucents = [a for a, _ in pairs], [b for _, b in pairs]
    return {
        "channels": len(pairs),
        "median_activation_ours": statistics.median(mine),
        "median_activation_lucent": statistics.median(lucents),
        "median_ratio": statistics.median(mine) / statistics.median(lucents),
        "ours_higher": sum(a > b for a, b in pairs),
        "speed_ratio_wall": lucent_run["s_per_channel"] / ours_run["s_per_channel"],
        "speed_ratio_cpu": lucent_run["cpu_s_per_channel"] / ours_run["cpu_s_per_channel"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["ours", "lucent", "compare", "run", "profile", "speed"])
    parser.add_argument("files", nargs="*", help="compare: ours.json lucent.json; run: a product run directory")
    parser.add_argument("--lucent", help="run: a lucent result (.json) to compare with, channel by channel")
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--sample", type=int, default=0, help="lucent: time only this many channels per layer")
    parser.add_argument("--save", help="folder for the images (.npy per layer)")
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on both sides (0: torch's default)")
    parser.add_argument("--variant", choices=VARIANTS, default="product", help="ours: a lever taken out")
    parser.add_argument("--all-layers", action="store_true", help="ours: every conv layer, not the five depths")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32], help="profile: batch sizes")
    parser.add_argument("--profile-threads", type=int, nargs="+", default=[1, 2], help="profile: thread counts")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the Lucent subprocess
    if args.what == "compare":
        result = compare(args.files)
    else:
        result = {"ours": ours, "lucent": lucent, "run": scored_run, "profile": profile, "speed": speed}[args.what](
            args
        )
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    summary = {k: v for k, v in result.items() if k not in ("rows", "machine")}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
