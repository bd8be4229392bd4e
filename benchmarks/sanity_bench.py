"""``sanity`` and ``faithfulness`` against Quantus 0.6.0 on efficientnet_lite0 (real weights), same images and maps.

- MPRT: the product's ``sanity`` with ``stages: layers`` against ``quantus.MPRT(layer_order="top_down", seed=42,
  similarity_func=correlation_spearman, abs=True, normalise=False)``; the map is the plain gradient of the
  original top-1 class summed over colour (|·| taken by both). Per-module Spearman must agree to float tolerance
  (``return_average_correlation`` is not used: it averages in the self-correlation).
- PixelFlipping: the product's RISE deletion curve (``_scores.deletion`` to zeros, ``step`` pixels per step)
  against ``quantus.PixelFlipping(features_in_step=3·step, perturb_baseline=0.0, abs=False, normalise=False)``
  given the same maps broadcast over colour (Quantus ranks C·H·W values; a pixel's three tie and move together).

Quantus pins clash with ours, so it runs in its own venv (``/work/benchvenv-quantus``: ``pip install
torch==2.14.1 torchvision==0.29.1 quantus==0.6.0 scikit-image``), as a child process of this script, on the
model, inputs, classes and maps this script saves. Wall times are of the same work on both sides.

    python benchmarks/sanity_bench.py [--images 2] [--step 1792] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUANTUS_PYTHON = Path("/work/benchvenv-quantus/bin/python")


def explain(model, inputs, targets, **_):
    """Plain gradient of the target logit, summed over colour: [B, 1, H, W] numpy (Quantus's explain_func)."""
    import numpy as np
    import torch

    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32).clone().requires_grad_(True)
    logits = model(x)
    picked = logits.gather(1, torch.as_tensor(np.asarray(targets)).long()[:, None]).sum()
    (grad,) = torch.autograd.grad(picked, x)
    return grad.sum(1, keepdim=True).detach().numpy()


def quantus_side(folder: Path, step: int) -> None:
    """In Quantus's venv: MPRT and PixelFlipping on the saved model, inputs, classes and maps."""
    import numpy as np
    import quantus
    import torch

    model = torch.load(folder / "model.pt", weights_only=False).eval()
    data = np.load(folder / "data.npz")
    x, y, maps = data["x"], data["y"], data["maps"]
    started = time.perf_counter()
    mprt = quantus.MPRT(
        similarity_func=quantus.similarity_func.correlation_spearman,
        layer_order="top_down",
        seed=42,
        abs=True,
        normalise=False,
        disable_warnings=True,
    )
    found = mprt(model=model, x_batch=x, y_batch=y, a_batch=None, explain_func=explain, device="cpu", softmax=False)
    mprt_s = time.perf_counter() - started
    out = {"mprt": {k: [float(v) for v in vals] for k, vals in found.items()}, "mprt_s": mprt_s}
    out["version"] = quantus.__version__
    (folder / "quantus.json").write_text(json.dumps(out))  # kept even if PixelFlipping fails
    started = time.perf_counter()
    flipping = quantus.PixelFlipping(
        features_in_step=3 * step, perturb_baseline=0.0, abs=False, normalise=False, disable_warnings=True
    )
    # PixelFlipping's __call__ asserts that features_in_step divides H·W, while a pixel of an RGB image is three
    # features: 3·step never divides 224² = 2¹⁰·7². Its per-batch loop has no such check; it is called directly.
    from quantus.helpers.model.pytorch_model import PyTorchModel

    wrapped = PyTorchModel(model, channel_first=True, softmax=True, device="cpu")
    curves = flipping.evaluate_batch(
        model=wrapped, x_batch=x, y_batch=y, a_batch=np.broadcast_to(maps[:, None], x.shape)
    )
    out.update(pixel_flipping=np.asarray(curves).tolist(), pixel_flipping_s=time.perf_counter() - started)
    (folder / "quantus.json").write_text(json.dumps(out))


def product_side(folder: Path, images: int, step: int) -> dict:
    """The product's sanity (stages: layers) and deletion curves, timed; saves what Quantus needs."""
    import numpy as np
    import torch

    sys.path.insert(0, str(HERE.parent))
    from pipeline.engine.work import run_methods
    from pipeline.images import prepare, sample_images
    from pipeline.methods import _scores, method_class
    from pipeline.methods.base import ModelInfo
    from pipeline.methods.params import parse_params
    from pipeline.models.registry import load_model, resolve_weights

    loaded = load_model("efficientnet_lite0", resolve_weights("efficientnet_lite0", "DEFAULT"))
    model = loaded.module.eval()
    x = torch.stack([prepare(p, loaded.transform)[0] for p in sample_images()[:images]])
    with torch.no_grad():
        y = model(x).argmax(1)
    maps = explain(model, x.numpy(), y.numpy())[:, 0]  # the same maps for PixelFlipping
    torch.save(model, folder / "model.pt")
    np.savez(folder / "data.npz", x=x.numpy(), y=y.numpy(), maps=np.abs(maps))

    def make(name: str, **params):
        cls = method_class(name)
        return cls(parse_params(cls.Params, params, name))

    info = ModelInfo("efficientnet_lite0", (), (0.0,) * 3, (1.0,) * 3)
    started = time.perf_counter()
    made = run_methods(model, x, [], [make("gradient", target="class"), make("sanity", stages="layers")], info)
    sanity_s = time.perf_counter() - started
    outputs = [o for m, o in made if m.name == "sanity"]
    stages = outputs[0].fields["stages"]
    spearman = {  # stage -> per image
        stage: [next(r for r in o.fields["scores"] if r["method"] == "gradient")["spearman_abs"][k] for o in outputs]
        for k, stage in enumerate(stages)
    }
    started = time.perf_counter()
    curves = [
        _scores.deletion(x[i], _scores.pixel_ranks(torch.from_numpy(np.abs(maps[i])), x.shape[-2:]), int(y[i]), step, i)
        for i in range(len(x))
    ]
    with torch.inference_mode():
        deletion = _scores.curve_scores(curves, model, 64)
    deletion_s = time.perf_counter() - started
    return {
        "stages": stages,
        "spearman": spearman,
        "sanity_s": sanity_s,
        "deletion": deletion,
        "deletion_s": deletion_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--step", type=int, default=1792, help="pixels per step (Quantus: 3× features)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--work", type=Path, help="keep the product's side here and reuse it on a rerun")
    parser.add_argument("--quantus-side", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quantus_side:
        quantus_side(args.quantus_side, args.step)
        return
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.work or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        kept = folder / f"product_{args.images}_{args.step}.json"
        if kept.exists():
            ours = json.loads(kept.read_text())
        else:
            ours = product_side(folder, args.images, args.step)
            kept.write_text(json.dumps({**ours, "deletion": [c.tolist() for c in ours["deletion"]]}))
        print("product:", {k: v for k, v in ours.items() if k.endswith("_s")}, flush=True)
        command = [str(QUANTUS_PYTHON), __file__, "--quantus-side", str(folder), "--step", str(args.step)]
        subprocess.run(command, check=True)
        theirs = json.loads((folder / "quantus.json").read_text())
    # Quantus's keys: "original" (the self-correlation), then one per module, top-down
    layers = [k for k in theirs["mprt"] if k != "original"]
    assert layers == ours["stages"], (layers[:3], ours["stages"][:3])
    mprt_diff = max(
        abs(a - b)
        for stage in layers
        for a, b in zip(theirs["mprt"][stage], ours["spearman"][stage], strict=True)
        if a == a and b is not None
    )
    flip_diff = max(
        float(np.abs(np.asarray(mine[1:]) - np.asarray(q)).max())
        for mine, q in zip(ours["deletion"], theirs["pixel_flipping"], strict=True)
    )
    result = {
        "images": args.images,
        "step": args.step,
        "modules": len(layers),
        "mprt_max_abs_diff": mprt_diff,
        "pixel_flipping_max_abs_diff": flip_diff,
        "product_sanity_layers_s": round(ours["sanity_s"], 1),
        "quantus_mprt_s": round(theirs["mprt_s"], 1),
        "product_deletion_s": round(ours["deletion_s"], 1),
        "quantus_pixel_flipping_s": round(theirs["pixel_flipping_s"], 1),
        "gradient_spearman_at_full_randomisation": ours["spearman"][layers[-1]],
        "quantus": theirs["version"],
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
