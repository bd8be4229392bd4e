"""Shared fixtures: no network ever, an empty torch hub cache, Hydra compose, tiny images."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from PIL import Image

from pipeline.config import register_configs

register_configs()  # method parameter defaults, as run.py registers them before Hydra composes
ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
OFFLINE = Path(__file__).parent / "offline"


class NetworkBlocked(RuntimeError):
    """Raised by every network entry point during the test session."""


def _blocked(*args, **kwargs):
    raise NetworkBlocked(f"network access attempted in tests: {args[1:] or kwargs}")


@pytest.fixture(autouse=True, scope="session")
def no_network(tmp_path_factory):
    """Block sockets and downloads for the whole session, and point torch hub at an empty folder."""
    hub = tmp_path_factory.mktemp("torch_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _blocked)
        mp.setattr(socket.socket, "connect_ex", _blocked)
        mp.setattr(socket, "create_connection", _blocked)
        mp.setattr(socket, "getaddrinfo", _blocked)
        mp.setenv("TORCH_HOME", str(hub))
        mp.setenv("PYTHONPATH", os.pathsep.join([str(OFFLINE), str(ROOT), os.environ.get("PYTHONPATH", "")]))
        torch.hub.set_dir(str(hub / "hub"))
        yield hub


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same random state, whatever ran before it: unseeded ``torch.randn`` inputs (and
    tolerances checked on them) give the same numbers alone, in any order, and in CI."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def fresh_job():
    """Every test starts as a new job of this process would: a job refused from another run's folder in an earlier
    test must not keep a later test's job-end hooks from writing into their own folder."""
    from pipeline.status import new_job

    new_job()


@pytest.fixture
def compose_cfg():
    """Compose the real config with overrides, as Hydra would for `python run.py ...`."""

    def _compose(overrides: list[str] | None = None, hydra_config: bool = False):
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            cfg = compose("config", overrides=overrides or [], return_hydra_config=hydra_config)
        if hydra_config:
            HydraConfig().set_config(cfg)
        return cfg

    return _compose


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    """Two small synthetic photos (smooth gradients with a bright square), no package data needed."""
    folder = tmp_path / "photos"
    folder.mkdir()
    yy, xx = np.mgrid[0:120, 0:160]
    for i in range(2):
        rgb = np.stack([xx / 160, yy / 120, np.full_like(xx, 0.3 + 0.4 * i, dtype=float)], -1)
        rgb[40:80, 60 + 20 * i : 100 + 20 * i] = [1.0, 0.9, 0.2]
        Image.fromarray((rgb * 255).astype(np.uint8)).save(folder / f"synthetic_{i}.png")
    return folder


def run_cli(
    args: list[str], cwd: Path, timeout: int = 600, env: dict | None = None, path: list[Path] = ()
) -> subprocess.CompletedProcess:
    """Run `python run.py ARGS` in a subprocess with the network blocked; output dir under ``cwd``; ``path``:
    folders put first on the Python path (e.g. where a test's plugins live), ``env``: extra variables."""
    python_path = os.pathsep.join([*map(str, path), str(OFFLINE), str(ROOT)])
    full = {**os.environ, "PYTHONPATH": python_path, "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
