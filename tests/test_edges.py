"""Nothing lost at the edges (issue 19): stops while the report is written and SIGHUP, refused reruns that must
leave a folder alone, plugins that collide with a built-in, a user's odd models, odd files, and one-line messages."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli

SMALL = ["models=[resnet18]", "weights=none", "layers=[first]", "methods=[filters,feature_maps]", "batch_size=1"]

# A plugin that sends this very process a signal at a chosen moment: deterministic, where a test that signals
# from outside can only hope to hit a window of a few milliseconds.
STOPPER = """
import os, signal
from pipeline.output import manifest
from pipeline.report import callback

SIGNUM = getattr(signal, os.environ["STOP_SIGNAL"])
AT = os.environ["STOP_AT"]
if SIGNUM == signal.SIGHUP:  # under nohup the test run ignores SIGHUP, and so would this child, which then keeps it
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # (plugins load before the run sets up its stop handlers)
real_update, real_write = callback.update_job, manifest.Manifest.write


fired = []


def update_job(folder, job_dir):
    if AT == "report" and not fired:
        fired.append(SIGNUM)
        os.kill(os.getpid(), SIGNUM)
    return real_update(folder, job_dir)


def mine():
    if "STOP_JOB" not in os.environ:
        return True
    from hydra.core.hydra_config import HydraConfig

    return str(HydraConfig.get().job.num) == os.environ["STOP_JOB"]


def write(self, record):
    real_write(self, record)
    # once, after the first ok line: two render threads may both write before either checks (ok goes 0 -> 2)
    if AT == "first_artefact" and self.ok >= 1 and not fired and mine():
        fired.append(SIGNUM)
        os.kill(os.getpid(), SIGNUM)


callback.update_job = update_job
manifest.Manifest.write = write
"""


def cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python run.py ARGS` with the network blocked and ``cwd`` (where test plugins live) on the path."""
    return run_cli(args, cwd, timeout, env, [cwd])


def said(stderr: str) -> list[str]:
    """The console's lines, without the progress bar's redraws."""
    return [line.split("\r")[-1].strip() for line in stderr.split("\n") if line.split("\r")[-1].strip()]


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def temps(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*.tmp")]


# --- 1, 2: every stop is said once, recorded as what it was, and leaves a report --------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "signame,at,code",
    [("SIGTERM", "report", 143), ("SIGHUP", "first_artefact", 129)],  # SIGINT takes SIGTERM's path
)
def test_a_stop_while_the_report_is_written_or_by_sighup_is_said_recorded_and_leaves_a_report(
    tmp_path, photo_dir, signame, at, code
):
    (tmp_path / "stopper.py").write_text(STOPPER)
    out = tmp_path / "run"
    proc = cli(
        [*SMALL, f"images=[{photo_dir}]", "plugins=[stopper]", f"hydra.run.dir={out}"],
        tmp_path,
        env={"STOP_SIGNAL": signame, "STOP_AT": at},
    )
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    stopped = [line for line in said(proc.stderr) if f"stopped by {signame}" in line]
    assert len(stopped) == 1, said(proc.stderr)
    status = read(out / "job_status.json")
    assert (status["status"], status["exit_code"]) == ("INTERRUPTED", code)
    assert (out / "index.html").is_file() and (out / "report").is_dir()
    assert temps(out) == []
    info = read(out / "run.json")
    if at == "report":  # every artefact was made: the run is finished, the stop came after it
        assert info["status"] == "finished" and info["counts"]["remaining"] == 0
        assert f"{info['counts']['ok']} of {info['counts']['planned']} artefacts in place" in stopped[0]
        index = (out / "index.html").read_text(encoding="utf-8")
        assert "INTERRUPTED" in index  # the report tells the job the same way job_status.json does
    else:
        assert (info["status"], info["stopped_by"], info["exit_code"]) == ("interrupted", signame, code)
        assert 0 < info["counts"]["ok"] < info["counts"]["planned"]


# --- 3: a refused run changes nothing in a folder it does not own ----------------------------------------------------
def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_refused_rerun_or_a_run_into_a_busy_folder_changes_nothing_there(tmp_path, photo_dir, capfd):
    import fcntl

    from pipeline.api import sweep

    out = tmp_path / "run"
    args = [*SMALL, f"images=[{photo_dir}]", f"hydra.run.dir={out}"]
    assert sweep(args).exit_code == 0
    overrides = (out / ".hydra" / "overrides.yaml").read_text()
    assert "models=[resnet18]" in overrides and "top_k" not in overrides  # the job's own record is there
    before = snapshot(out)
    capfd.readouterr()
    assert sweep([*args, "feature_maps.top_k=4"]).exit_code == 2
    assert [line for line in said(capfd.readouterr().err) if "resume:" in line] == [
        f"error: resume: {out} holds a run made with feature_maps.top_k=64, this run has feature_maps.top_k=4; "
        "rerun with the same settings to resume it, or choose another output folder (hydra.run.dir=...)."
    ]
    assert snapshot(out) == before  # .hydra/*.yaml, job_status.json, run.log, run.json, the report: all as they were

    with open(out / ".run.lock", "a") as handle:  # another run is writing into the folder right now
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        assert sweep(args).exit_code == 2
    assert snapshot(out) == before
    assert f"another run is writing into {out} right now" in capfd.readouterr().err


# --- 13: one message for any garbage checkpoint, whatever exception its bytes make torch.load raise ------------------
def garbage_checkpoints(folder: Path) -> list[Path]:
    """Many files that are not checkpoints: random bytes of many sizes, real checkpoints cut short, text, pickles
    that are not tensors, a zip that is not torch's."""
    import io
    import pickle
    import random
    import zipfile

    import torch

    rng = random.Random(19)
    files: dict[str, bytes] = {f"random_{i}.pth": rng.randbytes(rng.choice([1, 7, 64, 600, 4096])) for i in range(60)}
    files["pickle_marker.pth"] = b"\x80\x02" + rng.randbytes(300)
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(64, 3, 3, 3), "bias": torch.zeros(64)}, buffer)
    whole = buffer.getvalue()
    for i, cut in enumerate(sorted(rng.sample(range(1, len(whole) - 30), 12))):
        files[f"truncated_{i}.pth"] = whole[:cut]
    files["text.pth"] = b"weights: none\nthis is a text file\n" * 20
    files["empty_dict.pth"] = pickle.dumps({})
    files["empty_list.pth"] = pickle.dumps([], protocol=4)
    files["numbers.pth"] = pickle.dumps({"weight": [1.0, 2.0]})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "not torch")
    files["other.zip"] = buffer.getvalue()
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


@pytest.mark.filterwarnings("ignore")
def test_any_garbage_checkpoint_gets_one_and_the_same_line(tmp_path):
    from pipeline.errors import UserError
    from pipeline.models.registry import read_checkpoint
    from pipeline.output.writer import error_text

    reasons = {}
    for path in garbage_checkpoints(tmp_path):
        with pytest.raises(UserError) as caught:
            read_checkpoint(path)
        message = str(caught.value)
        assert "\n" not in message and "weights_only=False" not in message
        reasons[path.name] = message.replace(repr(str(path)), "<path>")
        assert error_text(caught.value) == f"UserError: {message}"  # our own words: no "(at registry.py:249)"
    assert set(reasons.values()) == {
        "weights: cannot use checkpoint <path>: it is not a PyTorch checkpoint of plain tensors, or it is damaged or cut short (only plain tensors are read: weights_only=True)."
    }, reasons
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(UserError, match=r"empty.pth': it is empty\.$"):
        read_checkpoint(tmp_path / "empty.pth")


# --- 12: a string selects a module by name, an integer a conv layer by index ----------------------------------------
def test_a_string_names_a_layer_and_an_integer_indexes_one(compose_cfg):
    import torch
    from torch import nn

    from pipeline.api import visualize
    from pipeline.config import settings_from
    from pipeline.errors import UserError
    from pipeline.models.layers import conv_layers, select_layers

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.ReLU(), nn.Conv2d(5, 6, 3))
    convs = conv_layers(net)
    assert [c.name for c in convs] == ["0", "2", "4"]
    # on the command line: layers=['2'] is a string, layers=[2] an integer
    by_name = settings_from(compose_cfg(["layers=['2']"])).layers
    by_index = settings_from(compose_cfg(["layers=[2]"])).layers
    assert [c.name for c in select_layers(convs, by_name)] == ["2"]
    assert [c.name for c in select_layers(convs, by_index)] == ["4"]
    with pytest.raises(UserError, match=r"'1' \(a string\) names no conv layer .* give the integer: layers=\[1\]"):
        select_layers(convs, ["1"])  # the module named 1 is a ReLU
    # in Python, the same
    x = torch.rand(1, 3, 16, 16)
    for layers, expected in ((["2"], ["2"]), ([2], ["4"]), ("4", ["4"]), ([0, "0"], ["0"])):
        found = [a.record["layer"] for a in visualize(net, layers=layers, images=x, methods=["feature_maps"])]
        assert found == expected, layers


# --- 5, 6, 7: a user's own model returning a tuple or a dict, taking one channel, or in half precision --------------
class OddNet:
    """Factory of tiny models with 1000 classes whose forward returns what ``kind`` says."""

    @staticmethod
    def make(kind: str = "tensor", channels: int = 3):
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.features = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3))
                self.head = nn.Linear(8, 1000)

            def forward(self, x):
                logits = self.head(torch.relu(self.features(x)).mean((2, 3)))
                if kind == "tuple":
                    return logits, x.mean()
                if kind == "dict":
                    return {"aux": logits.detach() * 0, "logits": logits}
                if kind == "dict_unnamed":
                    return {"a": logits, "b": logits}
                return logits

        torch.manual_seed(5)
        return Net().eval()


METHODS = ["filters", "feature_maps", "guided_backprop", "grad_cam"]  # input tiles, input gradients, class scores


def top_class(artefacts) -> int:
    return next(a for a in artefacts if a.record["method"] == "grad_cam").record["targets"][0]["class_index"]


@pytest.mark.slow
def test_your_own_models_odd_outputs_one_channel_and_half_precision_work(capfd):
    import numpy as np
    import torch
    from PIL import Image
    from torchvision import transforms

    from pipeline.api import visualize

    x = torch.rand(3, 40, 48) * 2 - 1  # preprocessed with ImageNet's normalisation (visualize's default)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])

    def run(net, images=x, **kw):
        found = list(visualize(net, layers="all", images=images, methods=METHODS, **kw))
        assert [a.record.get("error") for a in found if not a.ok] == []
        for a in found:  # every picture draws (a grayscale model's input gradient is one channel)
            assert a.image.mode == "RGB"
        return found

    for kind in ("tuple", "dict"):
        net = OddNet.make(kind)
        expected = int(OddNet.make("tensor")(x[None]).argmax())  # the same weights, plain logits
        assert top_class(run(net)) == expected, kind

    unnamed = list(visualize(OddNet.make("dict_unnamed"), layers="all", images=x, methods=["grad_cam"]))
    assert {a.record["error"] for a in unnamed} == {
        "UserError: the model's forward returned a dict with keys ['a', 'b']; name its class scores logits or out "
        "(or return them as a tensor)."
    }

    gray = OddNet.make(channels=1)  # an RGB photo for a grayscale model: its luma, normalised as the RGB was
    v = x * std.view(3, 1, 1) + mean.view(3, 1, 1)
    luma = (torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1) * v).sum(0, keepdim=True)
    g = ((luma - mean.view(3, 1, 1)) / std.view(3, 1, 1)).mean(0, keepdim=True)
    found = run(gray)
    assert top_class(found) == int(gray(g[None]).argmax())
    rgb = np.asarray(next(a for a in found if a.record["method"] == "feature_maps").image)
    assert rgb.shape[-1] == 3

    photo = Image.fromarray((np.random.default_rng(6).random((50, 60, 3)) * 255).astype(np.uint8))
    one_channel = transforms.Compose(
        [transforms.Grayscale(), transforms.ToTensor(), transforms.Normalize([0.5], [0.5])]
    )
    found = run(gray, images=[photo], transform=one_channel)
    assert top_class(found) == int(gray(one_channel(photo)[None]).argmax())

    half = OddNet.make().half()  # on the CPU
    before = [p.clone() for p in half.parameters()]
    assert top_class(run(half)) == int(half(x[None].half()).float().argmax())
    assert all(p.dtype == torch.float16 and torch.equal(p, b) for p, b in zip(half.parameters(), before, strict=True))
    assert "meta" not in capfd.readouterr().err  # no internal batch-estimate messages


# --- 4: a plugin that reuses a built-in method's name is refused in one line naming the collision --------------------
CLASH = """
from dataclasses import dataclass
from pipeline.methods import base, register
from pipeline.methods.grad_cam import GradCam


@dataclass(frozen=True)
class Params(base.Params):
    strength: int = 1


@register
class {cls}({parent}):
    name = "grad_cam"
    {params}
"""


@pytest.mark.parametrize(
    "module,parent,params", [("clash_other_params", "base.Method", "Params = Params"), ("clash_same", "GradCam", "")]
)
def test_a_plugin_reusing_a_built_in_name_is_refused_naming_both(
    compose_cfg, tmp_path, monkeypatch, module, parent, params
):
    from pipeline.config import settings_from
    from pipeline.errors import UserError
    from pipeline.methods import method_class

    (tmp_path / f"{module}.py").write_text(CLASH.format(cls="MyCam", parent=parent, params=params))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError) as caught:
        settings_from(compose_cfg([f"plugins=[{module}]", "methods=[grad_cam]"]))
    assert str(caught.value) == (
        f"plugins: {module}.MyCam registers the method name 'grad_cam', which the built-in method "
        "pipeline.methods.grad_cam.GradCam already has; give your method another name."
    )
    assert method_class("grad_cam").__module__ == "pipeline.methods.grad_cam"  # the built-in is still the one


# --- 9, 14: refused at the door, in one line, exit 2 ------------------------------------------------------------------
def test_bad_values_that_reached_the_work_are_refused_at_the_door(compose_cfg, tmp_path):
    from pipeline.config import settings_from
    from pipeline.door import check_folder, check_keys
    from pipeline.errors import UserError
    from pipeline.plan import make_plan

    def refused(overrides: list[str]) -> str:
        with pytest.raises(UserError) as caught:
            make_plan(settings_from(compose_cfg(["models=[resnet18]", "layers=[first]", *overrides])))
        return str(caught.value)

    assert refused(["seed=99999999999999999999999"]) == "seed: 99999999999999999999999 is above the maximum 4294967295."
    assert (
        refused([f"weights={tmp_path}"]) == f"weights: {str(tmp_path)!r} is a folder; give the checkpoint file in it."
    )
    assert refused(["weights=none", "methods=[feature_maps]", "feature_maps.channels=[3,99999]"]) == (
        "feature_maps: channels [99999] out of range for layer conv1 of resnet18, which has 64 channels."
    )
    make_plan(settings_from(compose_cfg(["models=[resnet18]", "weights=none", "feature_maps.channels=[-64,63]"])))

    with pytest.raises(UserError, match=r"^feature_vis.steps: 'feature_vis' is neither a setting nor an installed"):
        check_keys(["feature_vis.steps=8"])
    with pytest.raises(UserError, match=r"Closest valid: grad_cam"):
        check_keys(["grad_cma.top_k=2"])
    with pytest.raises(UserError, match=r"^grad_cam.topk: grad_cam has no parameter 'topk'.*Closest valid: top_k\.$"):
        check_keys(["grad_cam.topk=2"])
    check_keys(["+feature_viz.steps=8", "grad_cam.top_k=2", "render.font_px=12", "hydra.job.chdir=false", "seed=3"])

    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match=r"a_file' is a file\.$"):
        check_folder([f"hydra.run.dir={tmp_path / 'a_file' / 'run'}"])
    with pytest.raises(UserError, match=r"^hydra.sweep.dir: cannot write into '/proc/forbidden'"):
        check_folder(["-m", "hydra.sweep.dir=/proc/forbidden"])
    check_folder([f"hydra.run.dir={tmp_path / 'new' / 'run'}"])


@pytest.mark.slow
def test_the_cli_refuses_an_unknown_key_in_one_line_before_hydra_runs(tmp_path):
    proc = cli(["models=[resnet18]", "weights=none", "feature_vis.steps=8"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    told = said(proc.stderr)
    assert len(told) == 1 and told[0].startswith("error: feature_vis.steps: 'feature_vis' is neither a setting"), told
    assert not (tmp_path / "outputs").exists()  # refused before any folder was made


# --- 10: a newline in a file name; a picture that fails is said, not only recorded ----------------------------------
def test_a_newline_in_a_file_name_draws_and_a_failed_picture_is_said(compose_cfg, tmp_path, photo_dir, caplog):
    import logging
    import shutil

    from omegaconf import OmegaConf

    from pipeline.config import settings_from
    from pipeline.engine import sweep
    from pipeline.engine.artefacts import make_record
    from pipeline.output.manifest import Manifest, read_lines
    from pipeline.output.writer import Writer
    from pipeline.plan import make_plan

    odd = photo_dir / "two\nlines.png"
    shutil.copy(photo_dir / "synthetic_0.png", odd)
    cfg = compose_cfg(["models=[resnet18]", "weights=none", "layers=[first]", "methods=[feature_maps]"])
    cfg.images = [str(odd)]
    settings = settings_from(cfg)
    plan = make_plan(settings)
    root = tmp_path / "run"
    summary = sweep.run(settings, plan, root, config=OmegaConf.to_container(cfg, resolve=True))
    assert (summary.ok, summary.failed) == (1, [])
    assert read_lines(root / "manifest.jsonl")[0]["image_name"] == "two\nlines"  # the name as written

    mp, method = plan.models[0], plan.methods[0]
    record = make_record(plan, mp, method, mp.layers[0].name, odd)

    def broken():
        raise ValueError("cannot draw this")

    with caplog.at_level(logging.ERROR), Manifest(tmp_path / "m.jsonl") as manifest:
        writer = Writer(tmp_path, manifest)
        writer.submit(record, "x.png", broken)
        writer.close()
    assert read_lines(tmp_path / "m.jsonl")[0]["status"] == "failed"
    said_lines = [r.getMessage() for r in caplog.records if "picture failed" in r.getMessage()]
    assert len(said_lines) == 1 and said_lines[0].startswith("resnet18 feature_maps conv1 two_lines: picture failed")
    assert "ValueError: cannot draw this" in said_lines[0]


# --- 11: the report tells the folder as it is: a PNG deleted since the run, manifest lines that cannot be read -------
def test_a_rebuilt_report_shows_a_deleted_png_as_missing_and_says_which_lines_it_could_not_read(
    compose_cfg, tmp_path, photo_dir, caplog
):
    import logging

    from helpers import walk_report
    from omegaconf import OmegaConf

    from pipeline.config import settings_from
    from pipeline.engine import sweep
    from pipeline.output.manifest import read_lines
    from pipeline.plan import make_plan
    from pipeline.report.build import build_report

    cfg = compose_cfg([*SMALL, f"images=[{photo_dir}]", "predictions=false"])
    settings = settings_from(cfg)
    root = tmp_path / "run"
    sweep.run(settings, make_plan(settings), root, config=OmegaConf.to_container(cfg, resolve=True))
    lines = read_lines(root / "manifest.jsonl")
    gone = next(r for r in lines if r["method"] == "feature_maps")
    (root / gone["png"]).unlink()
    with open(root / "manifest.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"model": "resnet18", "status": "o\n')  # a torn line, then garbage
        handle.write("not json at all\n")

    with caplog.at_level(logging.WARNING):
        build_report(root)
    report = walk_report(root)
    assert report.broken() == []  # no dead "full size" link
    assert (root / gone["png"]) not in report.targets(".png")
    text = " ".join([*report.pages.values(), *report.chunks.values()])
    assert f"file missing: {Path(gone['png']).name} is no longer in the folder" in text
    warned = [r.getMessage() for r in caplog.records if "could not be read" in r.getMessage()]
    assert warned == [
        f"report: {root / 'manifest.jsonl'}: 2 line(s) could not be read (torn or not JSON) and are left out"
    ]


# --- 8: a joblib worker killed (kill -9, the out-of-memory killer) -----------------------------------------------------
@pytest.mark.slow
def test_a_killed_joblib_worker_is_said_in_one_line_and_its_job_recorded_as_failed(tmp_path, photo_dir):
    (tmp_path / "stopper.py").write_text(STOPPER)
    folder = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=local_parallel", *SMALL, "models=resnet18,alexnet", f"images=[{photo_dir}]"]
    proc = cli(
        [*args, "plugins=[stopper]", f"hydra.sweep.dir={folder}"],
        tmp_path,
        env={"STOP_SIGNAL": "SIGKILL", "STOP_AT": "first_artefact", "STOP_JOB": "1"},
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "leaked" not in proc.stderr
    died = [line for line in said(proc.stderr) if "worker process died" in line]
    assert died == [
        f"error: a worker process died (killed, or out of memory): job 1 cut short; run the same command again with "
        f"hydra.sweep.dir={folder} to resume"
    ]
    info = read(folder / "1" / "run.json")
    assert (info["status"], info["exit_code"]) == ("crashed", 1) and "kill -9" in info["error"]
    assert read(folder / "1" / "job_status.json")["status"] == "FAILED"
    assert read(folder / "0" / "run.json")["status"] == "finished"
    assert "Failures: 0 artefact(s), 1 job(s)" in (folder / "index.html").read_text(encoding="utf-8")


def test_a_tiny_memory_budget_is_told_in_units_that_show_it(caplog):
    import logging

    from pipeline.engine.memory import fitting_batch, size_text

    assert [size_text(n) for n in (1024, 5 * 2**20, 3 * 2**30 // 2, 12 * 2**30)] == [
        "1.0 KB",
        "5.0 MB",
        "1.5 GB",
        "12 GB",
    ]
    with caplog.at_level(logging.WARNING):
        assert fitting_batch(per_image=3 * 2**20, model_bytes=45 * 2**20, budget=1024, images=4, name="resnet18") == 1
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(
        "resnet18: one image needs about 3.0 MB, more than memory_budget 1.0 KB leaves after the model"
    )
    assert "0.0 GB" not in line
