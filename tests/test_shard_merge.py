"""Gathering methods under shards: each shard saves its states, the merge step folds them and writes the per-layer
artefacts into shard 0's folder, equal to the unsharded run's; idempotent, and a missing shard is said."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import OFFLINE, ROOT, run_cli
from test_shards import manifest, same_artefacts, sharded_sweep

from pipeline.config import check_shard
from pipeline.engine.partials import load_state, save_state
from pipeline.errors import UserError
from pipeline.methods.base import Method
from pipeline.report.shards import shard_groups, shown
from pipeline.report.summary import JobSummary, runs


def test_a_state_of_numbers_round_trips_and_objects_are_refused(tmp_path):
    state = {"peak": np.arange(6, dtype=np.float32).reshape(2, 3), "seen": 7, "mean": 0.25, "images": [3, 1, 2]}
    save_state(tmp_path / "a" / "x.npz", state)
    back = load_state(tmp_path / "a" / "x.npz")
    assert back.keys() == state.keys() and back["seen"] == 7 and back["mean"] == 0.25
    np.testing.assert_array_equal(back["peak"], state["peak"])
    np.testing.assert_array_equal(back["images"], [3, 1, 2])
    save_state(tmp_path / "empty.npz", {})  # a shard that saw no image
    assert load_state(tmp_path / "empty.npz") == {}
    with pytest.raises(TypeError, match="'crops' holds list"):
        save_state(tmp_path / "bad.npz", {"crops": [object()]})
    assert not (tmp_path / "bad.npz").exists()


def test_only_gathering_methods_that_merge_may_run_with_a_shard():
    class Merges(Method):
        name, gathers = "merges", True

        def merge_states(self, states: list[dict]) -> dict:
            return {}

    class Gathers(Method):
        name, gathers = "gathers", True

    assert Merges.merges() and not Gathers.merges() and not Method.merges()
    assert check_shard("1/2", [Merges()]) == (1, 2)
    with pytest.raises(UserError) as err:
        check_shard("1/2", [Merges(), Gathers()])
    assert str(err.value).startswith("shard: '1/2' cannot split gathers,") and "\n" not in str(err.value)
    with pytest.raises(NotImplementedError):
        Gathers().merge_states([{}])
    assert check_shard("0/2", [SimpleNamespace(name="filters")]) == (0, 2)


def _merge(folder: Path) -> subprocess.CompletedProcess:
    """``python -m pipeline.merge FOLDER`` as a user runs it (network blocked, as in ``run_cli``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(OFFLINE), str(ROOT)])}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.merge", str(folder)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def pictures(folder: Path, job: str, model: str = "alexnet") -> dict[str, bytes]:
    """The PNGs a job's part of the report shows for ``model``: path inside its job folder -> bytes."""
    text = (folder / "report" / "jobs" / job / f"{model}.js").read_text(encoding="utf-8")
    found = {}
    for path in set(re.findall(r'href=\\"\.\./\.\./([^"\\]+\.png)', text)):
        job_dir, inner = path.split("/", 1)
        found[inner] = (folder / job_dir / inner).read_bytes()
    return found


TOY = [
    "models=[alexnet]",
    "weights=none",
    "layers=[first,last]",
    "plugins=[tests.toy_gather]",
    "methods=[toy_peak,feature_maps]",
    "feature_maps.top_k=4",
    "batch_size=1",
    "render_workers=1",
    "save_raw=true",
]


@pytest.mark.slow
def test_shards_merged_equal_the_unsharded_run_idempotently_and_a_missing_shard_is_said(tmp_path, photo_dir):
    # toy_peak's merged arrays and pictures equal the whole run's too, byte for byte
    sweep = sharded_sweep(TOY, tmp_path, photo_dir)
    command, result, folder, shards, whole, parts = (
        sweep.command,
        sweep.result,
        sweep.folder,
        sweep.shards,
        sweep.whole,
        sweep.parts,
    )
    assert "merge: " in result.stderr and "3 shard(s) merged" in result.stderr, result.stderr[-2000:]
    peaks = [r for r in parts.values() if r["method"] == "toy_peak"]
    assert len(peaks) == 2 and {r["dir"].name for r in peaks} == {"1"}  # shard 0 owns them
    assert all(r["seen"] == 3 for r in peaks)  # every image of the run, though each shard saw one
    for job in shards:  # each shard saved its own state of each layer
        assert {p.name for p in (job / "partials" / "toy_peak").iterdir()} == {"features.0.npz", "features.10.npz"}
        assert load_state(job / "partials" / "toy_peak" / "features.0.npz")["seen"] == 1

    # the report shows the shards as one job, with the unsharded job's artefacts and PNG bytes
    page = (folder / "report" / "models" / "alexnet.html").read_text(encoding="utf-8")
    assert "1 run(s) in 4 job(s) (sharded)" in page and "16 artefact(s) ok" in page
    assert re.findall(r'<option value="(j-[^"]+)">', page) == ["j-0", "j-1"]  # the unsharded job and the shards
    assert pictures(folder, "0") == pictures(folder, "1") and len(pictures(folder, "0")) == 8
    assert "shard=1/3" not in (folder / "index.html").read_text(encoding="utf-8")

    # idempotent: a second merge makes nothing and leaves shard 0's manifest as it was
    before = (shards[0] / "manifest.jsonl").read_bytes()
    again = _merge(folder)
    assert again.returncode == 0 and "0 artefact(s) written" in again.stderr, again.stderr[-2000:]
    assert (shards[0] / "manifest.jsonl").read_bytes() == before

    # a lost partial (shard 2/3) and a lost merged picture: the merge says which shard, and writes nothing
    peak = next(r for r in peaks if r["layer"] == "features.10")
    (peak["dir"] / peak["png"]).unlink()
    (shards[2] / "partials" / "toy_peak" / "features.10.npz").unlink()
    missing = _merge(folder)
    assert missing.returncode == 1, missing.stderr[-2000:]
    lines = [line for line in missing.stderr.splitlines() if "shard 2/3" in line]
    assert len(lines) == 1 and "no partial state of toy_peak at features.10" in lines[0], missing.stderr[-2000:]
    # the same sweep again: shard 2/3 gathers again (nothing else is made), the merge remakes the same picture
    rerun = run_cli(command, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "1 artefact(s) written" in rerun.stderr, rerun.stderr[-2000:]
    assert rerun.stderr.count(", 0 written)") == 4, rerun.stderr[-2000:]
    same_artefacts(whole, manifest(*shards))
    assert pictures(folder, "0") == pictures(folder, "1")
    status = json.loads((shards[0] / "job_status.json").read_text())
    assert status["status"] == "COMPLETED"


def test_a_run_is_grouped_from_its_shard_0_and_counted_as_its_jobs():
    jobs = [
        ("0", ["m=a", "shard=null"]),
        ("1", ["m=a", "shard=1/2"]),
        ("2", ["m=a", "shard=0/2"]),
        ("3", ["m=b", "shard=1/2"]),  # another config whose shard 0 has not run: not grouped
        ("4", ["m=a", "shard=0/3"]),  # the same config cut in 3: another run
    ]
    assert shard_groups(jobs) == {"2": ["2", "1"], "4": ["4"]}
    summaries = [JobSummary(rel, rel, "COMPLETED", overrides=o) for rel, o in jobs]
    summaries[2].shards = ["2", "1"]
    pages = shown(summaries)
    assert [s.rel for s in pages] == ["0", "2", "3", "4"]
    assert pages[1].overrides == ["m=a", "shard=*/2"] and summaries[2].overrides == ["m=a", "shard=0/2"]
    assert runs(pages) == "2 run(s) in 5 job(s) (sharded)"


def test_merge_refuses_a_folder_that_is_not_there_in_one_line(tmp_path, capsys):
    from pipeline.merge import main

    assert main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "merge: " in err and "nowhere is not a directory" in err
    assert main([str(tmp_path)]) == 0  # nothing sharded there: nothing to merge
