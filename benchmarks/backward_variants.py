"""Ways to do the guided-backprop arithmetic of the standard sweep, timed side by side (no rendering).

    python benchmarks/backward_variants.py                    # vgg16 and resnet18, 2 photos, all layers
    python benchmarks/backward_variants.py --models alexnet --threads 1

Per model, for all conv layers and the top-8 max-unit targets of each of the photos:

- ``batched``       one forward with grad, one ``autograd.grad(..., is_grads_batched=True)`` per layer (the floor)
- ``replicated``    one forward of the batch repeated k times, one ordinary backward per layer
- ``loop``          one forward, k ordinary backwards per layer
- ``*_nhwc``        the same with model and input in ``torch.channels_last`` memory format

Every variant's input gradients are checked against the first variant run (max relative difference). The
process's peak RSS so far is printed after each variant; run one variant per process to read its own peak.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from bench import photo  # noqa: E402
from floor import _batch, _build, _forward_to, _max_unit_grad_outputs, conv_names, swap_relus  # noqa: E402

K = 8


def _prepare(name: str, photos: list[Path], nhwc: bool):
    model = _build(name, 0)
    swap_relus(model)
    x = _batch(name, photos)
    if nhwc:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return model, x, conv_names(model)


def batched(model, x, layers) -> list[torch.Tensor]:
    """One forward; per layer one vmapped backward over the k targets."""
    x = x.detach().requires_grad_(True)
    outputs = _forward_to(model, x, layers)
    grads = []
    for i, layer in enumerate(layers):
        act = outputs.pop(layer)
        go = _max_unit_grad_outputs(act, K)
        (g,) = torch.autograd.grad(act, x, go, retain_graph=i < len(layers) - 1, is_grads_batched=True)
        grads.append(g)
    return grads


def replicated(model, x, layers) -> list[torch.Tensor]:
    """One forward of the batch repeated k times; per layer one ordinary backward."""
    n = x.shape[0]
    xr = x.detach().repeat(K, 1, 1, 1).requires_grad_(True)
    outputs = _forward_to(model, xr, layers)
    grads = []
    for i, layer in enumerate(layers):
        act = outputs.pop(layer)
        go = _max_unit_grad_outputs(act[:n], K)  # [k, N, C, H, W] -> batch index j*N + i
        (g,) = torch.autograd.grad(act, xr, go.reshape(act.shape), retain_graph=i < len(layers) - 1)
        grads.append(g.view(K, n, *g.shape[1:]))
    return grads


def loop(model, x, layers) -> list[torch.Tensor]:
    """One forward; per layer k ordinary backwards."""
    x = x.detach().requires_grad_(True)
    outputs = _forward_to(model, x, layers)
    grads = []
    for i, layer in enumerate(layers):
        act = outputs.pop(layer)
        go = _max_unit_grad_outputs(act, K)
        per = []
        for j in range(go.shape[0]):
            last = i == len(layers) - 1 and j == go.shape[0] - 1
            per.append(torch.autograd.grad(act, x, go[j], retain_graph=not last)[0])
        grads.append(torch.stack(per))
    return grads


VARIANTS = {"batched": batched, "replicated": replicated, "loop": loop}


def main(argv: list[str] | None = None) -> int:
    """Time every variant per model; print medians and agreement with ``batched``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet18"])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variants", nargs="+", default=[*VARIANTS, *(f"{v}_nhwc" for v in VARIANTS)])
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    photos = [photo("chelsea"), photo("grace_hopper")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(photos)} photos, top-{K} targets")
    for name in args.models:
        reference = None
        for variant in args.variants:
            nhwc = variant.endswith("_nhwc")
            model, x, layers = _prepare(name, photos, nhwc)
            fn = VARIANTS[variant.removesuffix("_nhwc")]
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                grads = fn(model, x, layers)
                times.append(time.perf_counter() - started)
            grads = [g.contiguous() for g in grads]
            if reference is None:
                reference, diff = grads, 0.0
            else:  # worst layer's max |difference| relative to that layer's largest gradient
                diff = max(
                    float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
                    for a, b in zip(grads, reference, strict=True)
                )
            print(
                f"{name:<10} {variant:<16} median {statistics.median(times):7.2f}s  "
                f"runs {' '.join(f'{t:.2f}' for t in times)}  max rel. diff vs {args.variants[0]} {diff:.1e}  "
                f"peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB",
                flush=True,
            )
            del model, x, grads
    return 0


if __name__ == "__main__":
    sys.exit(main())
