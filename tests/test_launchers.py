"""Launcher presets: real joblib and submitit-local sweeps end in a report that covers every PNG; SLURM knobs offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from unittest import mock

import pytest
from conftest import run_cli
from helpers import walk_report
from hydra.utils import instantiate

EVIL = "<script>alert(1)<\\script>&\"'"
TINY = [
    "models=alexnet,squeezenet1_0",
    "weights=none",
    "layers=[first]",
    "methods=[filters,feature_maps]",
    "predictions=false",
]


def report_pngs(folder: Path) -> tuple[set[str], set[str], set[str]]:
    """PNG paths (relative to ``folder``) on disk, in index.jsonl, and linked full size from the report that a
    browser reaches from index.html (model pages and the job chunks they load); every link must resolve."""
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*.png")}
    lines = (folder / "index.jsonl").read_text(encoding="utf-8").splitlines()
    in_index = {json.loads(line)["png"] for line in lines if json.loads(line)["png"]}
    report = walk_report(folder)
    assert report.broken() == []
    in_report = {p.relative_to(folder.resolve()).as_posix() for p in report.targets(".png", "href")}
    thumbs = report.targets(".jpg", "src")
    assert len(thumbs) == len(on_disk) and all(p.is_file() for p in thumbs)  # every card shows its thumbnail
    return on_disk, in_index, in_report


def sweep(tmp_path: Path, photo_dir: Path, launcher: list[str]) -> Path:
    folder = tmp_path / "sweep"
    result = run_cli(["-m", *launcher, *TINY, f"images=[{photo_dir}]", f"hydra.sweep.dir={folder}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


@pytest.mark.slow
def test_joblib_sweep_with_two_workers_reports_every_png(tmp_path, photo_dir):
    shutil.copy(photo_dir / "synthetic_0.png", photo_dir / f"{EVIL}.png")
    folder = sweep(tmp_path, photo_dir, ["hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2"])
    on_disk, in_index, in_page = report_pngs(folder)
    assert len(on_disk) == 2 * (1 + 3)  # per model: one filters grid, feature maps of three photos
    assert on_disk == in_index == in_page
    for job in ("0", "1"):
        assert json.loads((folder / job / "job_status.json").read_text())["status"] == "COMPLETED"
        assert (folder / job / "manifest.jsonl").is_file()
    report = walk_report(folder)
    pages = [*report.pages.values(), *report.chunks.values()]
    assert not any("<script>alert" in text for text in pages)
    assert any("&lt;script&gt;alert(1)&lt;\\script&gt;&amp;&quot;&#x27;" in text for text in report.chunks.values())


@pytest.mark.slow
def test_submitit_local_sweep_reports_every_png(tmp_path, photo_dir):
    folder = sweep(tmp_path, photo_dir, ["hydra/launcher=local_submitit", "hydra.launcher.timeout_min=10"])
    on_disk, in_index, in_page = report_pngs(folder)
    assert len(on_disk) == 2 * (1 + 2)
    assert on_disk == in_index == in_page
    assert (folder / ".submitit").is_dir()
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert "alexnet" in page and "squeezenet1_0" in page


def test_slurm_preset_knobs_and_executor_parameters(compose_cfg, tmp_path):
    cfg = compose_cfg(
        ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}"], hydra_config=True
    )
    launcher_cfg = cfg.hydra.launcher
    assert launcher_cfg._target_ == "hydra_plugins.fmi_slurm_launcher.SlurmLauncher"  # Hydra's, waiting for every job
    assert launcher_cfg.partition == "gpu"
    assert (launcher_cfg.gpus_per_node, launcher_cfg.cpus_per_task, launcher_cfg.mem_gb) == (1, 8, 32)
    assert (launcher_cfg.timeout_min, launcher_cfg.array_parallelism) == (60, 16)
    assert compose_cfg(["hydra/launcher=slurm"], hydra_config=True).hydra.launcher.partition is None

    launcher = instantiate(launcher_cfg)
    launcher.setup(hydra_context=mock.MagicMock(), task_function=lambda cfg: None, config=cfg)
    with mock.patch("submitit.AutoExecutor") as executor_cls:
        executor = executor_cls.return_value
        executor.map_array.return_value = [mock.MagicMock(), mock.MagicMock()]
        launcher.launch([["models=alexnet"], ["models=resnet18"]], initial_job_idx=0)
    assert executor_cls.call_args.kwargs["cluster"] == "slurm"
    assert executor_cls.call_args.kwargs["folder"] == f"{tmp_path}/.submitit/%j"
    params = executor.update_parameters.call_args.kwargs
    assert params["slurm_partition"] == "gpu"
    assert (params["gpus_per_node"], params["cpus_per_task"], params["mem_gb"], params["timeout_min"]) == (1, 8, 32, 60)
    assert params["slurm_array_parallelism"] == 16
    assert len(executor.map_array.call_args.args[1]) == 2  # one array task per sweep job


def test_local_presets_compose(compose_cfg):
    joblib = compose_cfg(["hydra/launcher=local_parallel", "hydra.launcher.n_jobs=3"], hydra_config=True)
    assert joblib.hydra.launcher._target_.endswith("joblib_launcher.JoblibLauncher")
    assert joblib.hydra.launcher.n_jobs == 3
    local = compose_cfg(["hydra/launcher=local_submitit"], hydra_config=True)
    assert local.hydra.launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert local.hydra.launcher.gpus_per_node == 0
