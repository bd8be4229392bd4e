"""A sharded run (``shard=i/n`` jobs whose overrides differ only in ``shard``) shown as one job, as if it had run
unsharded: shard 0's part of the report holds every shard's artefacts, counts and predictions, and the other
shards' parts stay (for index.jsonl and their own bookkeeping) but are left off the pages.

Done on the data the pages read (jobs and summaries), so every page shows the shards as one run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

from pipeline.report.jobs import Job

SHARD = re.compile(r"shard=(\d+)/(\d+)")
WORSE = ("LOST", "FAILED", "INTERRUPTED", "REFUSED", "RUNNING", "UNKNOWN")  # a run is as bad as its worst shard


def shard_of(overrides: list[str]) -> tuple[tuple[str, ...], int, int] | None:
    """(the other overrides, i, n) of a job run with ``shard=i/n``; None without one (or ``shard=null``)."""
    for item in overrides:
        found = SHARD.fullmatch(item.replace(" ", ""))
        if found:
            rest = tuple(o for o in overrides if not o.startswith("shard="))
            return rest, int(found.group(1)), int(found.group(2))
    return None


def shard_groups(jobs: list[tuple[str, list[str]]]) -> dict[str, list[str]]:
    """Each sharded run whose shard 0 is among ``jobs`` ((rel, overrides) each): shard 0's rel -> the rels of the
    run's shards present, in shard order (shard 0 first). The first job of a shard wins over a repeat."""
    runs: dict[tuple[tuple[str, ...], int], dict[int, str]] = {}
    for rel, overrides in jobs:
        found = shard_of(overrides)
        if found is not None:
            rest, i, n = found
            runs.setdefault((rest, n), {}).setdefault(i, rel)
    return {shards[0]: [shards[i] for i in sorted(shards)] for shards in runs.values() if 0 in shards}


def group_of(rel: str, overrides: list[str], others: list[tuple[str, list[str]]]) -> tuple[str | None, list[str]]:
    """For one job: the rel of its run's shard 0 (None when it is no shard, or shard 0 is not there) and the rels of
    that run's shards present."""
    groups = shard_groups([(rel, overrides), *others])
    for owner, members in groups.items():
        if rel in members:
            return owner, members
    return None, []


def combined_fingerprint(fingerprints: list[str]) -> str:
    """The fingerprint of a run's part: those of its shards' files (one shard alone keeps its own)."""
    if len(fingerprints) == 1:
        return fingerprints[0]
    return hashlib.sha256("\n".join(fingerprints).encode()).hexdigest()[:32]


def _state(job: Job) -> str:
    return job.state.upper()


def combine(jobs: list[Job]) -> Job:
    """The shards' jobs (shard 0 first) as one: every record, predictions and counts of all; the state and error
    of the worst shard; shard 0's own manifest bytes (what index.jsonl holds of it) and files."""
    owner = jobs[0]
    predictions: dict[str, dict] = {}
    counts: dict[str, int] = {}
    for job in jobs:
        for model, table in job.predictions.items():
            if isinstance(table, dict):
                predictions.setdefault(str(model), {}).update(table)
        found = job.run.get("counts") if isinstance(job.run.get("counts"), dict) else {}
        for name, value in found.items():
            if isinstance(value, int):
                counts[name] = counts.get(name, 0) + value
    worst = next((j for state in WORSE for j in jobs if _state(j) == state), owner)
    status = dict(worst.status) or dict(owner.status)
    if worst is not owner and not worst.status:
        status = {"status": worst.state}
    run = {**owner.run, "predictions": predictions, "counts": counts}
    return dataclasses.replace(owner, records=[r for job in jobs for r in job.records], run=run, status=status)


def shown(summaries: list) -> list:
    """The summaries the pages show: a sharded run's other shards left off (shard 0's part stands for them), and
    shard 0's labelled ``shard=*/n``."""
    hidden = {rel for s in summaries for rel in s.shards[1:]}
    found = []
    for s in summaries:
        if s.rel in hidden:
            continue
        if len(s.shards) > 1:
            overrides = [SHARD.sub(lambda m: f"shard=*/{m.group(2)}", o) for o in s.overrides]
            label = f"{s.rel}: {' '.join(overrides)}" if overrides else s.rel
            s = dataclasses.replace(s, overrides=overrides, label=label)
        found.append(s)
    return found
