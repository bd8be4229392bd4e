"""The sweep: for each model, filters per layer, then per image batch one forward for every requested layer,
feature maps streamed out of it, and one batched backward per (layer, gradient method).

Every artefact lands as a PNG (and .npy) with a manifest line; a failing artefact, image or model is
recorded and the run goes on. ``run.json`` is written when the run starts and rewritten when it ends.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pipeline.config import Settings
from pipeline.images import load_image
from pipeline.methods import ACTIVATION_POLICY, METHOD_RULES, Session, feature_maps, filters
from pipeline.methods.backprop import Gradients
from pipeline.models.capture import run_capturing
from pipeline.models.registry import LoadedModel, load_model
from pipeline.output.files import safe_name, write_json
from pipeline.output.manifest import Manifest
from pipeline.output.writer import Writer, error_text
from pipeline.plan import ModelPlan, Plan
from pipeline.render.figures import feature_maps_figure, filters_figure, gradients_figure, input_tile

log = logging.getLogger(__name__)
PACKAGES = ("torch", "torchvision", "hydra-core", "omegaconf", "matplotlib", "pillow", "numpy", "tqdm")


@dataclass
class Summary:
    """What a run produced: counts, failures, and the top-5 predictions per model and image."""

    planned: int
    ok: int = 0
    failed: list[dict] = field(default_factory=list)
    predictions: dict = field(default_factory=dict)
    seconds: float = 0.0


def versions() -> dict[str, str]:
    """Installed versions of the packages that shape the pictures."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


class _Run:
    """State shared by one run's models: output root, writer, settings."""

    def __init__(self, settings: Settings, plan: Plan, root: Path, writer: Writer, summary: Summary) -> None:
        self.settings, self.plan, self.root, self.writer, self.summary = settings, plan, root, writer, summary

    # --- records -----------------------------------------------------------------------------------------------
    def record(self, mp: ModelPlan, method: str, layer: str | None, image: Path | None, **extra) -> dict:
        params = dict(self.settings.params.get(method, {}))
        if method in METHOD_RULES:
            params["activation_policy"] = ACTIVATION_POLICY
        index = next((item.index for item in mp.layers if item.name == layer), None)
        return {
            "model": mp.name,
            "weights": mp.weights.label,
            "random_weights": mp.weights.random,
            "layer": layer,
            "layer_index": index,
            "method": method,
            "image": None if image is None else str(image),
            "image_label": None if image is None else self.plan.labels[image],
            "params": params,
            **extra,
        }

    def png_path(self, mp: ModelPlan, method: str, layer: str | None, image: Path | None) -> str:
        stem = safe_name(layer) if layer is not None else "class"
        if image is not None:
            stem = f"{stem}__{self.plan.labels[image]}"
        return f"{safe_name(mp.name)}/{method}/{stem}.png"

    def header(self, mp: ModelPlan, method: str, layer, image: Path | None, extra: str = "") -> list[str]:
        where = f"layer {layer.name} ({layer.describe()})" if layer is not None else "class logit"
        weights = mp.weights.label.upper() if mp.weights.random else mp.weights.label
        second = f"weights: {weights}" + (f" · image: {self.plan.labels[image]}" if image is not None else "")
        return [f"{mp.name} · {method} · {where}", second + (f" · {extra}" if extra else "")]

    # --- per model ---------------------------------------------------------------------------------------------
    def model(self, mp: ModelPlan, pending: Future[LoadedModel]) -> None:
        started = time.perf_counter()
        try:
            loaded = pending.result()
        except Exception as exc:  # noqa: BLE001 - one model failing must not sink the sweep
            self.fail_model(mp, error_text(exc))
            return
        log.info(
            "%s: %d conv layers, weights %s, ready after %.1fs",
            mp.name,
            len(mp.layers),
            mp.weights.label,
            time.perf_counter() - started,
        )
        if "filters" in self.plan.methods:
            self.filters(mp, loaded)
        if self.plan.per_image_methods() or self.settings.predictions:
            images = self.plan.images
            for start in range(0, len(images), self.settings.batch_size):
                self.batch(mp, loaded, images[start : start + self.settings.batch_size])

    def fail_model(self, mp: ModelPlan, error: str) -> None:
        log.error("%s failed: %s", mp.name, error)
        for method in self.plan.methods:
            if method == "filters":
                for layer in mp.layers:
                    self.writer.fail(self.record(mp, method, layer.name, None), error)
        for image in self.plan.images:
            self.fail_image(mp, image, error)

    def fail_image(self, mp: ModelPlan, image: Path, error: str, methods: list[str] | None = None) -> None:
        for method in methods or self.plan.per_image_methods():
            for layer in self.layers_for(method, mp):
                self.writer.fail(self.record(mp, method, layer, image), error)

    def layers_for(self, method: str, mp: ModelPlan) -> list[str | None]:
        if method in METHOD_RULES and self.settings.target_spec(method).target == "class":
            return [None]
        return [layer.name for layer in mp.layers]

    def filters(self, mp: ModelPlan, loaded: LoadedModel) -> None:
        params = self.settings.params.get("filters", {})
        modules = dict(loaded.module.named_modules())
        for layer in mp.layers:
            record = self.record(mp, "filters", layer.name, None)
            try:
                result = filters(
                    modules[layer.name].weight,
                    max_filters=int(params.get("max_filters", 64)),
                    view=str(params.get("view", "auto")),
                    max_in_channels=int(params.get("max_in_channels", 16)),
                )
            except Exception as exc:  # noqa: BLE001
                self.writer.fail(record, error_text(exc))
                continue
            record["params"] = {**record["params"], "view": result.view, "in_channels_shown": result.in_channels_shown}
            record["filters"] = result.indices
            header = self.header(
                mp, "filters", layer, None, f"{len(result.indices)} of {layer.out_channels} filters, view {result.view}"
            )
            self.writer.submit(
                record,
                self.png_path(mp, "filters", layer.name, None),
                lambda r=result, h=header: filters_figure(r, h, params),
            )

    # --- per image batch ---------------------------------------------------------------------------------------
    def batch(self, mp: ModelPlan, loaded: LoadedModel, images: list[Path]) -> None:
        tensors, kept = [], []
        for image in images:
            try:
                tensors.append(loaded.transform(load_image(image)))
                kept.append(image)
            except Exception as exc:  # noqa: BLE001 - a bad image fails only its own artefacts
                log.warning("image %s failed to load: %s", image, exc)
                self.fail_image(mp, image, f"image failed to load: {error_text(exc)}")
        if not kept:
            return
        x = torch.stack(tensors).to(loaded.device)
        sources = [input_tile(t, loaded.transform.mean, loaded.transform.std) for t in tensors]
        backprop_methods = [m for m in self.plan.methods if m in METHOD_RULES]
        done: set[tuple] = set()
        try:
            if backprop_methods:
                self.with_gradients(mp, loaded, x, kept, sources, backprop_methods, done)
            else:
                self.inference(mp, loaded, x, kept, sources, done)
        except Exception as exc:  # noqa: BLE001 - fail what is left of this batch, keep the rest of the run
            log.error("%s: batch of %d image(s) failed: %s", mp.name, len(kept), error_text(exc))
            for image in kept:
                for method in self.plan.per_image_methods():
                    for layer in self.layers_for(method, mp):
                        if (method, layer, image) not in done:
                            self.writer.fail(self.record(mp, method, layer, image), error_text(exc))

    def inference(self, mp, loaded, x, images, sources, done) -> None:
        names = [layer.name for layer in mp.layers] if "feature_maps" in self.plan.methods else []
        by_name = {layer.name: layer for layer in mp.layers}
        with torch.inference_mode():
            logits = run_capturing(
                loaded.module,
                x,
                names,
                lambda name, out: self.feature_maps(mp, by_name[name], out, images, sources, done),
                full=self.settings.predictions,
            )
        self.predictions(mp, loaded, logits, images)

    def with_gradients(self, mp, loaded, x, images, sources, methods, done) -> None:
        specs = {m: self.settings.target_spec(m) for m in methods}
        channel_methods = [m for m in methods if specs[m].target == "channel"]
        needs_layers = bool(channel_methods) or "feature_maps" in self.plan.methods
        names = [layer.name for layer in mp.layers] if needs_layers else []
        full = self.settings.predictions or any(s.target == "class" for s in specs.values())
        with Session(loaded.module, x, names, full=full, strategy=self.settings.backward_strategy) as session:
            self.predictions(mp, loaded, session.logits, images)
            for layer in mp.layers if needs_layers else []:
                if "feature_maps" in self.plan.methods:
                    self.feature_maps(mp, layer, session.activations[layer.name], images, sources, done)
                for method in channel_methods:
                    self.gradients(
                        mp, loaded, layer, session.gradients(method, specs[method], layer.name), images, sources, done
                    )
                session.release(layer.name)
            for method in methods:
                if specs[method].target == "class":
                    self.gradients(mp, loaded, None, session.gradients(method, specs[method]), images, sources, done)

    def feature_maps(self, mp, layer, output, images, sources, done) -> None:
        params = self.settings.params.get("feature_maps", {})
        for i, image in enumerate(images):
            record = self.record(mp, "feature_maps", layer.name, image)
            done.add(("feature_maps", layer.name, image))
            try:
                result = feature_maps(
                    output[i], int(params.get("top_k", 64)), params.get("channels"), str(params.get("rank_by", "mean"))
                )
            except Exception as exc:  # noqa: BLE001
                self.writer.fail(record, error_text(exc))
                continue
            record.update(channels=result.channels, scores=result.scores, shape=list(output.shape[1:]))
            header = self.header(
                mp,
                "feature_maps",
                layer,
                image,
                f"top {len(result.channels)} of {output.shape[1]} channels by {params.get('rank_by', 'mean')}",
            )
            figure = lambda r=result, h=header, s=sources[i]: feature_maps_figure(r, h, params, s)  # noqa: E731
            self.writer.submit(record, self.png_path(mp, "feature_maps", layer.name, image), figure)

    def gradients(self, mp, loaded, layer, result: Gradients, images, sources, done) -> None:
        params = self.settings.params.get(result.method, {})
        layer_name = None if layer is None else layer.name
        for i, image in enumerate(images):
            record = self.record(mp, result.method, layer_name, image)
            done.add((result.method, layer_name, image))
            targets = [t.as_dict() for t in result.targets[i]]
            for t in targets:
                if "class_index" in t and loaded.categories:
                    t["class_name"] = loaded.categories[t["class_index"]]
            labels = [
                f"{t.get('class_name', t['class_index'])} · {t['value']:.3g}"
                if "class_index" in t
                else f"ch {t['channel']} · {t['value']:.3g}"
                for t in targets
            ]
            record.update(targets=targets, input_size=list(result.grads[i].shape[-2:]))
            spec = self.settings.target_spec(result.method)
            what = (
                f"{len(targets)} channels by max activation, objective {spec.objective}"
                if spec.target == "channel"
                else "top-1 class"
                if spec.class_index is None
                else f"class {spec.class_index}"
            )
            display = f"display {params.get('display', 'signed')} p{params.get('percentile', 99.5)}"
            header = self.header(mp, result.method, layer, image, f"{what}; {display}")
            figure = lambda g=result.grads[i], lb=labels, h=header, s=sources[i]: gradients_figure(g, lb, h, params, s)  # noqa: E731
            self.writer.submit(record, self.png_path(mp, result.method, layer_name, image), figure)

    def predictions(self, mp, loaded, logits, images) -> None:
        if logits is None:
            return
        probs = torch.softmax(logits.detach().float(), dim=1).cpu()
        top = torch.topk(probs, min(5, probs.shape[1]), dim=1)
        table = self.summary.predictions.setdefault(mp.name, {})
        for i, image in enumerate(images):
            table[self.plan.labels[image]] = [
                {
                    "class_index": int(c),
                    "class_name": loaded.categories[int(c)] if loaded.categories else str(int(c)),
                    "prob": round(float(p), 5),
                }
                for p, c in zip(top.values[i], top.indices[i], strict=True)
            ]


def _loaded_ahead(models: list[ModelPlan], settings: Settings) -> Iterator[tuple[ModelPlan, Future[LoadedModel]]]:
    """Each model with its load under way; while one is worked on, the next is built (or read from disk) on a
    background thread, so a sweep does not wait for model construction after the first (one extra model in
    memory). Loads run one at a time, in plan order, so a seeded random init is the same as a plain load."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load") as loader:

        def start(mp: ModelPlan) -> Future[LoadedModel]:
            return loader.submit(load_model, mp.name, mp.weights, settings.device, settings.model_cache)

        following = start(models[0]) if models else None
        for i, mp in enumerate(models):
            current, following = following, start(models[i + 1]) if i + 1 < len(models) else None
            yield mp, current


def run(settings: Settings, plan: Plan, root: Path, config: dict | None = None) -> Summary:
    """Produce every artefact of ``plan`` under ``root``; never raises for a failing artefact."""
    root.mkdir(parents=True, exist_ok=True)
    summary = Summary(planned=plan.artefact_count(settings))
    started = time.perf_counter()
    info = {"status": "running", "config": config, "versions": versions(), "device": settings.device}
    write_json(root / "run.json", info)
    log.info(
        "planned %d artefacts: %d model(s), %d image(s), methods %s",
        summary.planned,
        len(plan.models),
        len(plan.images),
        ", ".join(plan.methods),
    )
    with Manifest(root / "manifest.jsonl") as manifest, logging_redirect_tqdm():
        bar = tqdm(total=summary.planned, unit="png", desc="artefacts", dynamic_ncols=True, mininterval=0.5)
        writer = Writer(
            root,
            manifest,
            settings.save_raw,
            settings.render_workers,
            settings.png_compression,
            on_done=lambda _r: bar.update(1),
        )
        state = _Run(settings, plan, root, writer, summary)
        try:
            for mp, pending in _loaded_ahead(plan.models, settings):
                bar.set_postfix_str(mp.name)
                state.model(mp, pending)
        finally:
            writer.close()
            bar.close()
        summary.ok, summary.failed = manifest.ok, list(manifest.failed)
    summary.seconds = round(time.perf_counter() - started, 2)
    info.update(
        status="finished",
        counts={"planned": summary.planned, "ok": summary.ok, "failed": len(summary.failed)},
        failures=[{k: r.get(k) for k in ("model", "layer", "method", "image", "error")} for r in summary.failed],
        predictions=summary.predictions,
        seconds=summary.seconds,
    )
    write_json(root / "run.json", info)
    return summary
