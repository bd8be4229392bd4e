"""Interrupted, preempted or fed odd input, a run loses nothing, says what happened once, and picks up where it
stopped: resume, signals, requeue, honest status, odd images, one-line messages, labels, list_layers, the bar."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import OFFLINE, ROOT, run_cli
from omegaconf import OmegaConf
from PIL import Image, ImageFont

from pipeline.config import settings_from
from pipeline.engine import sweep
from pipeline.engine.model_run import ModelRun
from pipeline.engine.progress import BACKWARD, PICTURE, compute_cost
from pipeline.engine.work import BatchWork
from pipeline.errors import UserError
from pipeline.images import ImageReadError, load_image, open_image
from pipeline.methods.base import Method, Needs, Output, Picture, Scope
from pipeline.models import load_model, resolve_weights
from pipeline.models.registry import clear_cache
from pipeline.output.files import same_file
from pipeline.output.manifest import read_lines
from pipeline.plan import make_plan
from pipeline.render.grid import ELLIPSIS, fit_label, font
from pipeline.status import job_state, worst

TINY = [
    "models=[alexnet]",
    "weights=none",
    "layers=[first,last]",
    "feature_maps.top_k=8",
    "predictions=true",
    "methods=[filters,feature_maps,guided_backprop,gradient,deconvnet,overview]",
]
# "A resnet18 run" for the signal tests: long enough to stop halfway, short enough for CI (45 artefacts).
RESNET = [
    "models=[resnet18]",
    "weights=none",
    "layers=[0,5,10,15,19]",
    "feature_maps.top_k=16",
    "guided_backprop.top_k=4",
    "gradient.top_k=4",
    "deconvnet.top_k=4",
    "batch_size=1",
    "methods=[filters,feature_maps,guided_backprop,gradient,deconvnet]",
]


# --- helpers ----------------------------------------------------------------------------------------------------------
def pngs(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*.png")}


def run_json(root: Path) -> dict:
    return json.loads((root / "run.json").read_text(encoding="utf-8"))


def ok_lines(root: Path) -> list[dict]:
    return [r for r in read_lines(root / "manifest.jsonl") if r["status"] == "ok"]


def assert_one_ok_line_per_artefact(root: Path, planned: int) -> None:
    lines = read_lines(root / "manifest.jsonl")
    keys = [(r["model"], r["method"], r["layer"], r["image"]) for r in lines]
    assert len(keys) == len(set(keys)) == planned, "one line per artefact, no duplicates"
    assert {r["status"] for r in lines} == {"ok"}
    for r in lines:  # each line vouches for its files: size and sha256
        assert same_file(root / r["png"], r["files"]["png"]), r["png"]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a non-interactive shell's background child ignores SIGINT


def start_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    """`python run.py ARGS` in the background, in its own session, with default signal handling."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(OFFLINE), str(ROOT)]), "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )


def wait_for_ok_lines(proc: subprocess.Popen, manifest: Path, count: int, timeout: float = 600) -> None:
    """Poll until ``manifest`` holds ``count`` ok lines (the run is then part-way through)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be stopped: {proc.stderr.read()[-2000:]}")
        if manifest.is_file() and sum('"status": "ok"' in line for line in manifest.read_text().splitlines()) >= count:
            return
        time.sleep(0.1)
    proc.kill()
    pytest.fail("the run made no progress")


def console_lines(stderr: str) -> list[str]:
    """What a person reads on the console: the progress bar's redraws (carriage returns) left out."""
    lines = []
    for line in stderr.split("\n"):
        text = line.split("\r")[-1].strip()
        if text:
            lines.append(text)
    return lines


# --- resume -----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_rerun_keeps_what_is_intact_and_redoes_failed_missing_and_altered_artefacts(tmp_path, photo_dir):
    out = tmp_path / "run"
    args = [*TINY, f"images=[{photo_dir}]", "save_raw=true", f"hydra.run.dir={out}"]
    first = run_cli(args, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    original = pngs(out)
    planned = run_json(out)["counts"]["planned"]
    assert planned == 20 and run_json(out)["counts"]["skipped"] == 0  # overview: a PNG, a GIF and a plot each
    lines = ok_lines(out)
    altered, missing, raw_altered = lines[3], lines[7], lines[11]
    png = out / altered["png"]
    png.write_bytes(png.read_bytes()[:-1] + b"x")  # same size, other bytes
    (out / missing["png"]).unlink()
    np.save(out / raw_altered["raw"], np.zeros(3, np.float32))
    overview = next(line for line in lines if line["method"] == "overview")
    gif = out / overview["gif"]
    data = bytearray(gif.read_bytes())
    data[len(data) // 2] ^= 0xFF
    gif.write_bytes(bytes(data))  # an attached picture altered (same size): the overview is redone
    manifest = out / "manifest.jsonl"
    text = manifest.read_text()
    failed = {**lines[0], "status": "failed", "error": "boom", "png": None}
    manifest.write_text(text + json.dumps(failed) + "\n" + json.dumps(lines[1]) + "\n" + '{"model": "alex')  # torn
    (out / "alexnet" / ".stale.png.abc.tmp").write_bytes(b"half")  # what a killed write leaves behind

    again = run_cli(args, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    counts = run_json(out)["counts"]
    assert counts == {"planned": 20, "skipped": 16, "ok": 4, "failed": 0, "remaining": 0}
    assert again.stderr.count("20 of 20 artefacts in") == 1 and "(16 already there, 4 written)" in again.stderr
    assert_one_ok_line_per_artefact(out, planned)
    assert pngs(out) == original  # redone artefacts have the bytes of the first run
    assert gif.read_bytes() != bytes(data)  # and the attached GIF was written again
    assert not list(out.rglob("*.tmp"))
    assert "alexnet: 2 conv layers" in again.stderr  # the model was needed, so it was loaded

    third = run_cli(args, tmp_path)
    assert third.returncode == 0 and run_json(out)["counts"]["skipped"] == 20
    assert "alexnet: 2 conv layers" not in third.stderr  # nothing to make: the model is not even loaded
    assert run_json(out)["predictions"]["alexnet"].keys() == {"synthetic_0", "synthetic_1"}  # carried over


@pytest.mark.slow
def test_a_sweep_rerun_into_its_folder_resumes_each_job(tmp_path, photo_dir):
    folder = tmp_path / "sweep"
    args = [
        "-m",
        "models=alexnet,squeezenet1_0",
        "weights=none",
        "layers=[first]",
        "methods=[filters,feature_maps]",
        "predictions=false",
        f"images=[{photo_dir}]",
        f"hydra.sweep.dir={folder}",
    ]
    assert run_cli(args, tmp_path).returncode == 0
    original = pngs(folder)
    (folder / "1" / ok_lines(folder / "1")[0]["png"]).unlink()
    again = run_cli(args, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert run_json(folder / "0")["counts"] == {"planned": 3, "skipped": 3, "ok": 0, "failed": 0, "remaining": 0}
    assert run_json(folder / "1")["counts"] == {"planned": 3, "skipped": 2, "ok": 1, "failed": 0, "remaining": 0}
    assert pngs(folder) == original
    for job in ("0", "1"):
        assert_one_ok_line_per_artefact(folder / job, 3)


def test_a_rerun_with_other_settings_is_refused_and_the_folder_left_alone(tmp_path, photo_dir):
    out = tmp_path / "run"
    args = ["models=[alexnet]", "weights=none", "layers=[first]", "methods=[filters]", f"images=[{photo_dir}]"]
    assert run_cli([*args, f"hydra.run.dir={out}"], tmp_path).returncode == 0
    before = {p: p.read_bytes() for p in (out / "manifest.jsonl", out / "run.json", out / "config.resolved.yaml")}
    proc = run_cli([*args, "filters.max_filters=3", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 2
    errors = [line for line in console_lines(proc.stderr) if line.startswith("error:")]
    assert errors == [
        f"error: resume: {out} holds a run made with filters.max_filters=64, this run has filters.max_filters=3; "
        "rerun with the same settings to resume it, or choose another output folder (hydra.run.dir=...)."
    ]
    assert {p: p.read_bytes() for p in before} == before  # the earlier run's record is untouched
    assert json.loads((out / "job_status.json").read_text())["status"] == "COMPLETED"  # and so is its job status


def _engine_setup(compose_cfg, photo_dir, extra=()):
    cfg = compose_cfg(
        [
            "models=[alexnet]",
            "weights=none",
            "layers=[first]",
            "methods=[filters,feature_maps]",
            f"images=[{photo_dir}]",
            "batch_size=1",
            "predictions=false",
            *extra,
        ]
    )
    settings = settings_from(cfg)
    return settings, make_plan(settings), OmegaConf.to_container(cfg, resolve=True)


def test_resume_loads_no_model_and_runs_no_forward_for_verified_work(compose_cfg, photo_dir, tmp_path, monkeypatch):
    settings, plan, config = _engine_setup(compose_cfg, photo_dir)
    loads, forwards = [], []
    real_load, real_run = sweep.load_model, BatchWork.run
    monkeypatch.setattr(sweep, "load_model", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    monkeypatch.setattr(BatchWork, "run", lambda self, batch: forwards.append(batch.labels) or real_run(self, batch))
    root = tmp_path / "run"
    first = sweep.run(settings, plan, root, config=config)
    assert (first.ok, first.skipped, loads, forwards) == (3, 0, ["alexnet"], [["synthetic_0"], ["synthetic_1"]])
    original = pngs(root)

    loads.clear(), forwards.clear()
    second = sweep.run(settings, plan, root, config=config)
    assert (second.ok, second.skipped, loads, forwards) == (0, 3, [], [])

    victim = next(r for r in ok_lines(root) if r["image_label"] == "synthetic_1")
    (root / victim["png"]).unlink()
    third = sweep.run(settings, plan, root, config=config)
    assert (third.ok, third.skipped, forwards) == (1, 2, [["synthetic_1"]])  # that batch alone, same images
    assert pngs(root) == original
    assert_one_ok_line_per_artefact(root, 3)


def test_resume_refuses_a_folder_another_run_is_writing_into(compose_cfg, photo_dir, tmp_path):
    import fcntl

    settings, plan, config = _engine_setup(compose_cfg, photo_dir)
    root = tmp_path / "run"
    root.mkdir()
    with open(root / ".run.lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        with pytest.raises(UserError, match="another run is writing into"):
            sweep.run(settings, plan, root, config=config)


# --- signals and requeue ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_and_sigkill_halfway_then_a_rerun_equal_an_uninterrupted_resnet18_run(tmp_path, photo_dir):
    args = [*RESNET, f"images=[{photo_dir}]"]
    reference = tmp_path / "reference"
    done = run_cli([*args, f"hydra.run.dir={reference}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    planned = run_json(reference)["counts"]["planned"]
    assert planned == 45

    for name, signum, code in (("term", signal.SIGTERM, 143), ("kill", signal.SIGKILL, -9)):
        out = tmp_path / name
        proc = start_cli([*args, f"hydra.run.dir={out}"], tmp_path)
        wait_for_ok_lines(proc, out / "manifest.jsonl", planned // 3)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == code, stderr[-2000:]
        read_lines(out / "manifest.jsonl")  # valid JSON lines (a torn last one after SIGKILL is skipped)
        if signum == signal.SIGTERM:
            info = run_json(out)
            assert info["status"] == "interrupted" and info["stopped_by"] == "SIGTERM" and info["exit_code"] == 143
            assert 0 < info["counts"]["ok"] < planned and info["counts"]["remaining"] > 0
            stopped = [line for line in console_lines(stderr) if "stopped by" in line]
            assert stopped == [
                f"warning: stopped by SIGTERM: {info['counts']['ok']} of {planned} artefacts in place in {out}; "
                "run the same command again to resume"
            ]
            assert "Traceback" not in stderr
            assert json.loads((out / "job_status.json").read_text())["status"] == "INTERRUPTED"
            assert (out / "index.html").is_file()  # the report was rebuilt
        rerun = run_cli([*args, f"hydra.run.dir={out}"], tmp_path)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        counts = run_json(out)["counts"]
        assert counts["skipped"] > 0 and counts["skipped"] + counts["ok"] == planned and counts["failed"] == 0
        assert_one_ok_line_per_artefact(out, planned)
        assert pngs(out) == pngs(reference), f"after {name} and a rerun the PNGs differ from an uninterrupted run"


@pytest.mark.slow
def test_sigint_stops_with_130_and_an_honest_status(tmp_path, photo_dir):
    out = tmp_path / "run"
    proc = start_cli([*RESNET, f"images=[{photo_dir}]", f"hydra.run.dir={out}"], tmp_path)
    wait_for_ok_lines(proc, out / "manifest.jsonl", 8)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert len([line for line in console_lines(stderr) if "stopped by SIGINT" in line]) == 1
    info = run_json(out)
    assert info["status"] == "interrupted" and info["exit_code"] == 130
    assert info["counts"]["ok"] == len(ok_lines(out))
    status = json.loads((out / "job_status.json").read_text())
    assert status["status"] == "INTERRUPTED" and status["exit_code"] == 130


@pytest.mark.slow
def test_a_stopped_sweep_starts_no_further_job(tmp_path, photo_dir):
    folder = tmp_path / "sweep"
    proc = start_cli(
        ["-m", *RESNET, "models=resnet18,alexnet", f"images=[{photo_dir}]", f"hydra.sweep.dir={folder}"], tmp_path
    )
    wait_for_ok_lines(proc, folder / "0" / "manifest.jsonl", 8)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    assert json.loads((folder / "0" / "job_status.json").read_text())["status"] == "INTERRUPTED"
    assert not (folder / "1").exists()
    assert (folder / "index.html").is_file()


@pytest.mark.slow
def test_submitit_local_requeues_a_preempted_job_and_it_resumes(tmp_path, photo_dir):
    """submitit asks a job to stop with USR2 (before a SLURM time limit, on preemption, and from its local
    executor's timer); its handler requeues the job, which must pick up from the files on disk."""
    folder = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=local_submitit", "hydra.launcher.timeout_min=10", *RESNET, f"images=[{photo_dir}]"]
    proc = start_cli([*args, f"hydra.sweep.dir={folder}"], tmp_path)
    job = folder / "0"
    wait_for_ok_lines(proc, job / "manifest.jsonl", 10)
    first_pid = run_json(job)["pid"]
    os.kill(first_pid, signal.SIGUSR2)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    info = run_json(job)
    assert info["pid"] != first_pid, "the job ran again, in a new process"
    assert info["status"] == "finished" and info["counts"]["skipped"] >= 10
    assert info["counts"]["skipped"] + info["counts"]["ok"] == info["counts"]["planned"] == 45
    assert_one_ok_line_per_artefact(job, 45)
    logs = "".join(p.read_text() for p in (folder / ".submitit").rglob("*_log.*"))
    assert "Requeued job" in logs
    assert json.loads((job / "job_status.json").read_text())["status"] == "COMPLETED"


def test_the_slurm_preset_requeues_timed_out_jobs(compose_cfg):
    cfg = compose_cfg(["hydra/launcher=slurm"], hydra_config=True)
    assert cfg.hydra.launcher.max_num_timeout >= 1  # a timed-out job comes back (a preempted one always does)


# --- honest status ----------------------------------------------------------------------------------------------------
def test_a_refused_run_says_so_in_run_json_and_job_status(tmp_path):
    out = tmp_path / "out"
    proc = run_cli(["device=tpu", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 2
    assert console_lines(proc.stderr)[0] == "error: device: 'tpu' is not one of auto, cpu, cuda. Closest valid: cpu."
    assert proc.stderr.count("tpu") == 1 and "Traceback" not in proc.stderr
    info = run_json(out)
    assert info["status"] == "refused" and info["exit_code"] == 2 and "'tpu'" in info["error"]
    status = json.loads((out / "job_status.json").read_text())
    assert status["status"] == "REFUSED" and status["exit_code"] == 2 and "'tpu'" in status["error"]
    assert not (out / "manifest.jsonl").exists()


@pytest.mark.slow
def test_a_sweep_with_bad_values_says_one_line_per_refused_job(tmp_path, photo_dir):
    folder = tmp_path / "sweep"
    proc = run_cli(
        [
            "-m",
            "models=alexnet,resnet19,vgg99",
            "weights=none",
            "layers=[first]",
            "methods=[filters]",
            f"images=[{photo_dir}]",
            f"hydra.sweep.dir={folder}",
        ],
        tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr + proc.stdout
    errors = [line for line in console_lines(proc.stderr) if line.startswith("error:")]
    assert len(errors) == 2
    assert errors[0].startswith("error: job 1: models: 'resnet19' is not a torchvision classification model.")
    assert errors[1].startswith("error: job 2: models: 'vgg99' is not a torchvision classification model.")
    states = [json.loads((folder / str(i) / "job_status.json").read_text())["status"] for i in range(3)]
    assert states == ["COMPLETED", "REFUSED", "REFUSED"]
    assert "3 jobs: 1 completed, 2 refused" in proc.stderr


def test_exit_codes_name_their_job_states():
    assert [job_state(c) for c in (0, 1, 2, 130, 143)] == ["COMPLETED", "FAILED", "REFUSED"] + ["INTERRUPTED"] * 2
    assert worst(0, 1) == 1 and worst(2, 1) == 2 and worst(2, 130) == 130 and worst(143, 0) == 143


# --- images, read as a person expects ---------------------------------------------------------------------------------
def _rgb(path: Path) -> np.ndarray:
    return np.asarray(load_image(path), dtype=np.int32)


def test_high_bit_grayscale_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 256 * 16).astype(np.uint16).reshape(16, 256)
    Image.fromarray(ramp).save(tmp_path / "16bit.png")  # I;16
    assert Image.open(tmp_path / "16bit.png").mode == "I;16"
    rgb = _rgb(tmp_path / "16bit.png")
    assert rgb.shape == (16, 256, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    np.testing.assert_allclose(rgb[..., 0], ramp / 257, atol=0.51)  # 0..65535 -> 0..255, not all white

    Image.fromarray(ramp.astype(np.int32) * 2).save(tmp_path / "int32.tif")  # I, beyond 16 bits: stretched
    rgb = _rgb(tmp_path / "int32.tif")
    assert rgb.min() == 0 and rgb.max() == 255 and 120 < rgb.mean() < 135

    Image.fromarray((ramp / 65535).astype(np.float32)).save(tmp_path / "float.tif")  # F in 0..1
    rgb = _rgb(tmp_path / "float.tif")
    np.testing.assert_allclose(rgb[..., 0], ramp / 257, atol=0.51)


def test_transparency_is_shown_over_white_like_a_viewer(tmp_path):
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((0, 0), 1)
    palette.save(tmp_path / "palette.png", transparency=0)  # index 0 (black) is transparent
    rgb = _rgb(tmp_path / "palette.png")
    assert rgb[0, 0].tolist() == [255, 0, 0] and rgb[2, 2].tolist() == [255, 255, 255]

    la = np.zeros((4, 4, 2), np.uint8)
    la[..., 0], la[:2, :, 1] = 0, 255  # black, top half opaque
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    rgb = _rgb(tmp_path / "la.png")
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[3, 3].tolist() == [255, 255, 255]


def test_an_animated_gif_gives_its_first_frame_and_says_so(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    image, notes = open_image(tmp_path / "anim.gif")
    assert np.asarray(image)[4, 4].tolist() == [255, 0, 0]
    assert notes == ["first of 3 frames used"]
    assert open_image(tmp_path / "anim.gif")[0].size == (8, 8)


def test_a_phone_photo_stored_rotated_is_shown_upright(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = 255  # left half white as stored; orientation 6 means "rotate 90° clockwise to view"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    rgb = _rgb(tmp_path / "phone.jpg")
    assert rgb.shape == (40, 20, 3)  # upright: portrait
    assert rgb[5, 10].mean() > 200 and rgb[35, 10].mean() < 50  # stored left half is now the top


def test_cmyk_rgba_and_grayscale_still_read(tmp_path):
    Image.new("CMYK", (6, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("RGBA", (6, 4), (0, 0, 255, 255)).save(tmp_path / "rgba.png")
    Image.new("L", (6, 4), 128).save(tmp_path / "gray.png")
    assert _rgb(tmp_path / "cmyk.jpg")[1, 1].tolist()[0] > 200
    assert _rgb(tmp_path / "rgba.png")[1, 1].tolist() == [0, 0, 255]
    assert _rgb(tmp_path / "gray.png")[1, 1].tolist() == [128, 128, 128]


def _bomb(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height pixels (the image data never has to be decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    path.write_bytes(data)


def test_too_large_images_are_refused_before_decoding_with_a_configurable_limit(tmp_path):
    _bomb(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(ImageReadError, match=r"^too large: 30000×30000 = 900,000,000 pixels, above max_image_pixels"):
        open_image(tmp_path / "bomb.png", 100_000_000)
    Image.new("RGB", (100, 50)).save(tmp_path / "small.png")
    with pytest.raises(ImageReadError, match="above max_image_pixels=4,999"):
        open_image(tmp_path / "small.png", 4_999)
    assert open_image(tmp_path / "small.png", 5_000)[0].size == (100, 50)
    with pytest.raises(ImageReadError, match="too large"):  # without a limit, Pillow's own bomb check holds
        open_image(tmp_path / "bomb.png")


@pytest.mark.parametrize("value,fragment", [("abc", "is not an integer"), ("0", "below the minimum 1")])
def test_max_image_pixels_is_checked_at_the_door(compose_cfg, value, fragment):
    with pytest.raises(UserError, match=f"max_image_pixels: .*{fragment}"):
        settings_from(compose_cfg([f"max_image_pixels={value}"]))


@pytest.mark.slow
def test_odd_images_in_a_run_each_fail_or_work_on_their_own_and_are_told_once(tmp_path, photo_dir):
    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    Image.fromarray(ramp).save(photo_dir / "deep.png")
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(photo_dir / "anim.gif", save_all=True, append_images=frames[1:])
    _bomb(photo_dir / "bomb.png", 30000, 30000)
    good = (photo_dir / "synthetic_0.png").read_bytes()
    (photo_dir / "broken.png").write_bytes(good[: len(good) // 2])
    (photo_dir / "noise.jpg").write_bytes(np.random.default_rng(515).bytes(3000))  # seeded, like every test input
    out = tmp_path / "run"
    proc = run_cli(
        [
            "models=[alexnet,squeezenet1_0]",
            "weights=none",
            "layers=[first]",
            "methods=[feature_maps]",
            "feature_maps.top_k=4",
            "batch_size=2",
            "predictions=false",
            f"images=[{photo_dir}]",
            f"hydra.run.dir={out}",
        ],
        tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = console_lines(proc.stderr)
    said = [line for line in lines if line.startswith(("warning: image", "image "))]
    assert sorted(said) == sorted(
        [
            f"image {photo_dir / 'anim.gif'}: first of 2 frames used",
            f"warning: image {photo_dir / 'bomb.png'} failed to load: too large: 30000×30000 = 900,000,000 pixels,"
            " above max_image_pixels=100,000,000",
            next(line for line in said if "broken.png" in line),
            f"warning: image {photo_dir / 'noise.jpg'} failed to load: not an image file Pillow can read",
        ]
    ), "each image's problem said once, though two models read it"
    assert next(line for line in said if "broken.png" in line).startswith(
        f"warning: image {photo_dir / 'broken.png'} failed to load: truncated or corrupt (image file is truncated"
    )
    assert "Traceback" not in proc.stderr
    failed = [r for r in read_lines(out / "manifest.jsonl") if r["status"] == "failed"]
    assert {r["image_label"] for r in failed} == {"bomb", "broken", "noise"} and len(failed) == 6
    assert all("\n" not in r["error"] and r["error"].startswith("image failed to load: ") for r in failed)
    summary = [line for line in lines if "artefacts failed" in line]
    assert len(summary) == 1 and summary[0].startswith("error: 6 of 14 artefacts failed")


# --- messages ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_unusable_checkpoints_fail_in_one_line_of_our_own_words(tmp_path, photo_dir):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil.write_bytes(pickle.dumps({"features.0.weight": Payload()}, protocol=2))
    noise = tmp_path / "noise.pth"
    noise.write_bytes(np.random.default_rng(13).bytes(4096))  # seeded: the same bytes on every run
    for path, reason in (
        (
            noise,
            "it is not a PyTorch checkpoint of plain tensors, or it is damaged or cut short (only plain tensors are read: weights_only=True).",
        ),
        (evil, "it holds Python objects other than tensors (posix.system)"),
    ):
        out = tmp_path / path.stem
        proc = run_cli(
            ["models=[alexnet]", f"weights={path}", "layers=[first]", "methods=[filters]", f"hydra.run.dir={out}"],
            tmp_path,
        )
        assert proc.returncode == 1
        lines = console_lines(proc.stderr)
        told = [line for line in lines if line.startswith("error:")]
        assert len(told) == 2, lines  # the model's failure, then the run's summary
        assert told[0].startswith(
            f"error: alexnet failed: UserError: weights: cannot use checkpoint '{path}': {reason}"
        )
        assert told[1].startswith("error: 1 of 1 artefacts failed")
        assert "weights_only=False" not in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()  # the pickle's code never ran


@pytest.mark.slow
def test_a_blocked_output_folder_fails_its_artefacts_in_one_line_each_and_a_rerun_redoes_them(tmp_path, photo_dir):
    out = tmp_path / "run"
    (out / "alexnet").mkdir(parents=True)
    (out / "alexnet" / "feature_maps").write_text("a file where a folder must go")
    args = [*TINY, "methods=[filters,feature_maps]", f"images=[{photo_dir}]", f"hydra.run.dir={out}"]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    failed = [r for r in read_lines(out / "manifest.jsonl") if r["status"] == "failed"]
    assert len(failed) == 4 and {r["method"] for r in failed} == {"feature_maps"}
    assert all("\n" not in r["error"] for r in failed)
    (out / "alexnet" / "feature_maps").unlink()
    again = run_cli(args, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert run_json(out)["counts"] == {"planned": 6, "skipped": 2, "ok": 4, "failed": 0, "remaining": 0}
    assert_one_ok_line_per_artefact(out, 6)


@pytest.mark.slow
def test_each_outcome_is_said_once_and_log_lines_never_glue_onto_the_bar(tmp_path, photo_dir):
    good = (photo_dir / "synthetic_0.png").read_bytes()
    (photo_dir / "synthetic_1.png").write_bytes(good[: len(good) // 2])  # fails in the second batch, mid-bar
    (photo_dir / "synthetic_2.png").write_bytes(good)
    out = tmp_path / "run"
    proc = run_cli(
        [*TINY, "methods=[filters,feature_maps]", "batch_size=1", f"images=[{photo_dir}]", f"hydra.run.dir={out}"],
        tmp_path,
    )
    assert proc.returncode == 1
    stderr = proc.stderr
    assert stderr.count("synthetic_1.png failed to load") == 1
    assert stderr.count("artefacts failed") == 1 and stderr.count("planned 8 artefacts") == 1
    for message in ("warning: image ", "error: 2 of 8 artefacts failed", "alexnet: 2 conv layers"):
        start = stderr.index(message)
        assert start == 0 or stderr[start - 1] in "\r\n", (
            f"{message!r} glued onto: {stderr[max(0, start - 80) : start]!r}"
        )
    assert proc.stdout == ""  # the console is stderr; stdout is for list_layers tables
    log = (out / "run.log").read_text()
    assert re.search(r"\[\d{4}-\d\d-\d\d [\d:,]+\]\[pipeline.engine\]\[WARNING\] - image .*synthetic_1.png", log)


def test_list_layers_writes_no_output_folder(tmp_path):
    proc = run_cli(["models=[alexnet]", "list_layers=true"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "alexnet: 5 conv layers" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # no outputs/, no .hydra, no run.log, no report


def _label_font() -> ImageFont.FreeTypeFont:
    return font(12)


@pytest.mark.parametrize(
    "label",
    [
        "ch 79 · -5.02e-05",
        "ch 1023 · -0.000123",
        "ch 12 · 1234.5678",
        "Staffordshire bullterrier · 12.3",
        "académie · 0.45",
        "ch 7 · 3.14",
        "input",
    ],
)
@pytest.mark.parametrize("width", [40, 70, 102])
def test_labels_fit_their_tile_without_cutting_a_number(label, width):
    face = _label_font()
    fitted = fit_label(label, width, face)
    assert face.getlength(fitted) <= width or fitted == ELLIPSIS
    if face.getlength(label) <= width:
        assert fitted == label  # labels that fit are left exactly as they were
    number = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:e[-+]?\d+)?")
    originals = [float(n) for n in number.findall(label)]
    for token in number.findall(fitted.rstrip(ELLIPSIS)):
        value = float(token)  # a whole number, never a cut one such as "-5.02e-0"
        assert any(np.isclose(value, v, rtol=0.5, atol=0) for v in originals), (label, fitted)
    if fitted.endswith(ELLIPSIS) and " " in fitted:
        kept = fitted[: -len(ELLIPSIS)].split(" ")
        assert all(word in label or number.fullmatch(word) for word in kept)  # cut between words


def test_unicode_file_names_keep_their_name_in_headers_and_manifest(compose_cfg, tmp_path, photo_dir):
    (photo_dir / "synthetic_0.png").rename(photo_dir / "café Ω.png")
    settings, plan, config = _engine_setup(compose_cfg, photo_dir, ["methods=[feature_maps]"])
    root = tmp_path / "run"
    sweep.run(settings, plan, root, config=config)
    record = next(r for r in ok_lines(root) if r["image_name"] == "café Ω")
    assert record["image_label"] == "caf" and record["png"].isascii()  # file names stay safe
    run = ModelRun(settings, plan, plan.models[0])
    image = next(p for p in plan.images if p.name == "café Ω.png")
    header = run.header(plan.methods[0], Output(np.zeros(1), Picture([]), layer="features.0"), image)
    assert "image: café Ω" in header[1]


# --- the progress bar's costs -----------------------------------------------------------------------------------------
class _Probe(Method):
    name = "guided_backprop"  # a name says nothing about cost: only what the method declares does

    def __init__(self, needs: Needs, scope: Scope = Scope.LAYER_IMAGE):
        super().__init__()
        self._needs, self._scope = needs, scope

    @property
    def needs(self) -> Needs:
        return self._needs

    @property
    def scope(self) -> Scope:
        return self._scope


def test_progress_costs_come_from_what_a_method_needs_not_its_name():
    assert compute_cost(_Probe(Needs(activations=True))) == 0
    assert compute_cost(_Probe(Needs(activations=True, gradients=True))) == BACKWARD > 0


def test_planned_cost_leaves_out_verified_work(compose_cfg, photo_dir, tmp_path):
    settings, plan, _ = _engine_setup(compose_cfg, photo_dir, ["methods=[filters,feature_maps,gradient]"])
    mp = plan.models[0]
    fresh = ModelRun(settings, plan, mp)
    keys = list(plan.artefacts(mp))
    first_batch = {k for k in keys if k.image == plan.images[0]}
    resumed = ModelRun(settings, plan, mp, verified=frozenset(first_batch))
    everything = ModelRun(settings, plan, mp, verified=frozenset(keys))
    assert len(fresh.batches) == 2 and len(resumed.batches) == 1 and everything.batches == []
    assert 0 == everything.cost() < resumed.cost() < fresh.cost()
    assert not everything.needs_load() and resumed.needs_load()
    # the filter grid is a fifth of the artefacts but a small share of the work: the ETA must not count it alike
    filters = [k for k in keys if k.method == "filters"]
    assert len(filters) / len(keys) > 0.1 > PICTURE * len(filters) / fresh.cost()


# --- what already held, kept ------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_malicious_checkpoint_is_refused_unread(tmp_path):
    clear_cache()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    state = torchvision.models.alexnet(weights=None).state_dict()
    path.write_bytes(pickle.dumps({**{k: v for k, v in state.items()}, "extra": Payload()}))
    with pytest.raises(UserError, match="weights_only=True"):
        load_model("alexnet", resolve_weights("alexnet", str(path)))
    assert not marker.exists()
    torch.save(state, tmp_path / "plain.pth")
    assert load_model("alexnet", resolve_weights("alexnet", str(tmp_path / "plain.pth")))
