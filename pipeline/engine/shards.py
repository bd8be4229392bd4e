"""Gathering methods under ``shard=i/n``: each shard saves its per-layer states as partials, a merge step folds
them into the state one unsharded run would have gathered and finishes the method into shard 0's folder.

A shard writes ``<job>/partials/<method>/<layer>.npz`` (atomically) instead of finishing; a layer whose partial
is there is not gathered again on resume. ``merge_run`` needs every shard's partial of every layer left to make,
then runs ``finish`` through the engine's own ``ModelRun`` over the run's full image list, and appends the
artefacts with their manifest lines to shard 0's folder; what is already there and intact is not made again.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.config import Settings
from pipeline.engine.artefacts import make_record, png_path
from pipeline.engine.model_run import ModelRun
from pipeline.engine.partials import load_state, partial_path
from pipeline.engine.progress import Progress
from pipeline.engine.resume import MANIFEST, intact, matches
from pipeline.errors import UserError
from pipeline.methods.base import Method
from pipeline.output.files import exclusive
from pipeline.output.manifest import Manifest, read_lines
from pipeline.plan import ArtefactKey, Plan, make_plan


def _done(root: Path, plan: Plan, settings: Settings) -> frozenset[ArtefactKey]:
    """The planned artefacts already in ``root``'s manifest with an ok line that matches and intact files."""
    keys = {(k.model, k.method, k.layer): k for k in plan.artefacts()}
    models = {mp.name: mp for mp in plan.models}
    methods = {m.name: m for m in plan.methods}
    found = set()
    for line in read_lines(root / MANIFEST) if (root / MANIFEST).is_file() else []:
        key = keys.get((line.get("model"), line.get("method"), line.get("layer")))
        if key is None or line.get("status") != "ok" or line.get("image") is not None:
            continue
        mp, method = models[key.model], methods[key.method]
        png = png_path(plan, mp, method, key.layer, None)
        raw = str(Path(png).with_suffix(".npy")) if settings.save_raw else None
        if matches(line, make_record(plan, mp, method, key.layer, None), png, raw) and intact(root, line):
            found.add(key)
    return frozenset(found)


def mergeable(settings: Settings) -> list[Method]:
    """The run's gathering methods, which a sharded run leaves to the merge step."""
    return [m for m in settings.methods if m.gathers]


def merge_run(settings: Settings, roots: list[Path]) -> tuple[int, int]:
    """Merge the partials of the shard folders ``roots`` (shard i at ``roots[i]``) of one sharded run, made with
    ``settings`` (shard 0's, any ``shard`` ignored), into ``roots[0]``; return how many artefacts were written and
    how many failed (each recorded in shard 0's manifest with its reason).

    Raises UserError, before any work, when a shard lacks a partial of a layer left to make."""
    methods = mergeable(settings)
    if not methods:
        return 0, 0
    whole = dataclasses.replace(settings, methods=methods, shard=None)
    plan = make_plan(whole)  # the full image list, in the order the unsharded run has it
    done = _done(roots[0], plan, whole)
    todo = [key for key in plan.artefacts() if key not in done]
    if not todo:
        return 0, 0
    for key in todo:
        for i, root in enumerate(roots):
            if not partial_path(root, key.method, key.layer).is_file():
                raise UserError(
                    f"merge: shard {i}/{len(roots)} ({root}) has no partial state of {key.method} at {key.layer} "
                    "(still running, failed or lost); run that shard again, then merge."
                )
    with exclusive(roots[0] / ".run.lock", f"a run is writing into {roots[0]} right now; merge when it ends"):
        return _finish(whole, plan, roots, done, len(todo))


def _merged_states(model_run: ModelRun, roots: list[Path]) -> dict[str, dict[str, dict]]:
    """Per gathering method and layer still to make, the state one run over every image would have gathered: the
    shards' saved partials (in shard order) merged by the method."""
    merged: dict[str, dict[str, dict]] = {}
    for method in model_run.gathering:
        merged[method.name] = {}
        for layer in model_run.layer_todo[method.name]:
            partials = [load_state(partial_path(root, method.name, layer.name)) for root in roots]
            merged[method.name][layer.name] = method.merge_states(partials)
    return merged


def _finish(
    settings: Settings, plan: Plan, roots: list[Path], done: frozenset[ArtefactKey], count: int
) -> tuple[int, int]:
    from pipeline.engine.sweep import run_models  # sweep imports this module's neighbours: no cycle at import

    with Manifest(roots[0] / MANIFEST) as manifest:
        runs = [
            ModelRun(settings, plan, mp, verified=frozenset(k for k in done if k.model == mp.name))
            for mp in plan.models
        ]
        todo = [r for r in runs if r.gathering]
        for model_run in todo:
            model_run.use_states(_merged_states(model_run, roots))
        run_models(todo, settings, roots[0], manifest, Progress(sum(r.cost() for r in todo), count))
        return manifest.ok, len(manifest.failed)
