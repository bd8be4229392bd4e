"""The report: merged index.jsonl, escaped index.html, failures listed, the Hydra callback, and a real browser."""

from __future__ import annotations

import html
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from unittest import mock
from urllib.parse import unquote

import numpy as np
import pytest
from conftest import ROOT, run_cli
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from pipeline.report import NoManifestError, build_report
from pipeline.report import callback as cb
from pipeline.report.__main__ import main as report_main

EVIL = "<script>alert(1)</script>&\"'"
TINY = ["models=alexnet", "weights=none", "layers=[first]", "methods=[filters,feature_maps]"]


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def fake_job(job_dir: Path, model: str = "resnet18", label: str = "cat", fail: str | None = None) -> None:
    """A job directory as the engine writes it: PNGs, .npy, manifest.jsonl, run.json, resolved config, overrides."""
    records = [
        {"method": "filters", "layer": "conv1", "image": None, "image_label": None},
        {"method": "feature_maps", "layer": "conv1", "image": f"/photos/{label}.png", "image_label": label},
    ]
    lines = []
    for i, r in enumerate(records):
        stem = "conv1" if r["image_label"] is None else "conv1__img"
        png = f"{model}/{r['method']}/{stem}.png"
        _png(job_dir / png, i)
        np.save(job_dir / png.replace(".png", ".npy"), np.zeros(3, np.float32))
        lines.append({"model": model, "weights": "random init (seed 0)", "random_weights": True, "params": {}, **r})
        lines[-1].update(png=png, raw=png.replace(".png", ".npy"), status="ok", error=None)
    if fail:
        lines.append(
            {**lines[-1], "layer": "layer4.1.conv2", "png": None, "raw": None, "status": "failed", "error": fail}
        )
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"torn', encoding="utf-8")
    predictions = {model: {label: [{"class_index": 281, "class_name": "tabby", "prob": 0.625}]}}
    run = {"status": "finished", "config": {"models": [model], "images": [label]}, "predictions": predictions}
    (job_dir / "run.json").write_text(json.dumps(run), encoding="utf-8")
    (job_dir / "config.resolved.yaml").write_text(
        f"models:\n- {model}\nimages: {json.dumps(label)}\n", encoding="utf-8"
    )
    (job_dir / ".hydra").mkdir(exist_ok=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text(f"- models={model}\n", encoding="utf-8")


def test_merges_every_job_with_paths_relative_to_the_folder(tmp_path):
    fake_job(tmp_path / "0", "resnet18")
    fake_job(tmp_path / "1", "alexnet", fail="RuntimeError: out of memory")
    target = build_report(tmp_path)
    assert target == tmp_path / "index.html"
    records = [json.loads(line) for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    assert len(records) == 5  # torn last lines skipped
    assert {r["job"] for r in records} == {"0", "1"}
    for r in records:
        for key in ("png", "raw"):
            if r[key]:
                assert r[key].startswith(f"{r['job']}/") and (tmp_path / r[key]).is_file()
    page = target.read_text(encoding="utf-8")
    assert page.index(">resnet18 <") < page.index(">alexnet <")  # models in job order
    assert page.count('<img loading="lazy"') == 4
    assert 'href="0/resnet18/filters/conv1.npy"' in page and 'href="1/config.resolved.yaml"' in page
    assert "tabby" in page and "62.5%" in page  # top-5 predictions from run.json
    assert "RuntimeError: out of memory" in page and "layer4.1.conv2" in page
    assert "models:\n- alexnet" in page  # the resolved config, inline
    assert "http://" not in page and "https://" not in page  # no external assets


def test_single_run_folder_and_failed_job_without_manifest(tmp_path):
    fake_job(tmp_path)
    build_report(tmp_path)
    assert json.loads((tmp_path / "index.jsonl").read_text().splitlines()[0])["png"] == "resnet18/filters/conv1.png"

    sweep = tmp_path / "sweep"
    fake_job(sweep / "0")
    (sweep / "1").mkdir()
    status = {"status": "FAILED", "overrides": ["layers=nope"], "error": "UserError: layers: 'nope' matches nothing"}
    (sweep / "1" / "job_status.json").write_text(json.dumps(status))
    page = build_report(sweep).read_text(encoding="utf-8")
    assert "1 job(s)" in page and "layers=nope" in page and "UserError: layers: &#x27;nope&#x27; matches" in page


def test_every_name_is_escaped(tmp_path):
    job = tmp_path / f'we"ird <dir>&{EVIL}'
    fake_job(job, model=EVIL, label=EVIL, fail=EVIL)
    page = build_report(tmp_path).read_text(encoding="utf-8")
    assert page.count("<script>") == 2  # only the page's own two inline scripts
    assert "alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#x27;" in page
    srcs = re.findall(r' src="([^"]*)"', page)
    assert srcs and all(re.fullmatch(r"[A-Za-z0-9_.~/%-]+", src) for src in srcs)  # URL-quoted, no quote chars
    for src in srcs:
        assert (tmp_path / unquote(src)).is_file()


def test_command_line(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no manifest.jsonl under") and "\n" not in err
    fake_job(tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.report", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "index.html").is_file() and done.stdout.strip() == str(tmp_path / "index.html")


def test_callback_registered_and_switchable(compose_cfg):
    cfg = compose_cfg(hydra_config=True)
    assert cfg.hydra.callbacks.report._target_ == "pipeline.report.callback.ReportCallback"
    assert instantiate(cfg.hydra.callbacks.report).enabled is True
    off = compose_cfg(["report=false"], hydra_config=True)
    assert instantiate(off.hydra.callbacks.report).enabled is False


def test_callback_records_failed_job_and_never_raises(tmp_path, caplog):
    sweep, job_dir = tmp_path / "sweep", tmp_path / "sweep" / "3"
    config = OmegaConf.create(
        {
            "hydra": {
                "mode": "MULTIRUN",
                "sweep": {"dir": str(sweep)},
                "runtime": {"output_dir": str(job_dir), "cwd": "/"},
            }
        }
    )
    ret = JobReturn(overrides=["layers=nope"], status=JobStatus.FAILED)
    ret.return_value = ValueError("bad layer")
    cb.ReportCallback().on_job_end(config, ret)
    assert json.loads((job_dir / "job_status.json").read_text())["error"] == "ValueError: bad layer"
    assert "bad layer" in (sweep / "index.html").read_text()
    with mock.patch.object(cb, "build_report", side_effect=OSError("disk full")), caplog.at_level(logging.ERROR):
        (job_dir / "job_status.json").unlink()
        cb.ReportCallback().on_multirun_end(config)  # logged, not raised
    assert "could not be built" in caplog.text


def test_rebuilds_wait_for_the_folder_lock(tmp_path):
    fake_job(tmp_path / "0")
    with cb.folder_lock(tmp_path):
        worker = threading.Thread(target=cb.rebuild, args=(tmp_path,))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and not (tmp_path / "index.html").exists()
    worker.join()
    assert (tmp_path / "index.html").is_file()


@pytest.mark.slow
def test_sweep_with_a_failed_job_still_reports_the_rest(tmp_path, photo_dir):
    (photo_dir / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    folder = tmp_path / "sweep"
    args = ["-m", *TINY[:2], "layers=first,no_such_layer", "methods=[filters,feature_maps]", f"images=[{photo_dir}]"]
    result = run_cli([*args, "predictions=false", f"hydra.sweep.dir={folder}"], cwd=tmp_path)
    assert result.returncode != 0
    statuses = {job: json.loads((folder / job / "job_status.json").read_text()) for job in ("0", "1")}
    assert (statuses["0"]["status"], statuses["1"]["status"]) == ("FAILED", "REFUSED")  # corrupt photo; unknown layer
    assert "no_such_layer" in statuses["1"]["error"]
    records = [json.loads(line) for line in (folder / "index.jsonl").read_text().splitlines()]
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*.png")}
    assert len(on_disk) == 3 and on_disk == {r["png"] for r in records if r["png"]}
    failed = [r for r in records if r["status"] == "failed"]
    assert [r["image_label"] for r in failed] == ["corrupt"]
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert "Failures: 1 artefact(s), 1 job(s)" in page and "REFUSED" in page
    assert "image failed to load" in page and "no_such_layer" in page


# --- a real browser -------------------------------------------------------------------------------------------
CHECK = """<script>
document.querySelectorAll("img").forEach(function(i){i.loading="eager";});
window.addEventListener("load",function(){
 var imgs=[].slice.call(document.images);
 Promise.all(imgs.map(function(i){return new Promise(function(done){
  function result(){done(i.naturalWidth>0?null:i.getAttribute("src"));}
  if(i.complete){result();}else{i.addEventListener("load",result);i.addEventListener("error",result);}});}))
 .then(function(bad){
  var box=document.getElementById("filter");box.value="feature_maps";box.dispatchEvent(new Event("input"));
  var check={images:imgs.length,broken:bad.filter(Boolean),natural:imgs.filter(function(i){return i.naturalWidth>0;}).length,
   missing:document.querySelectorAll(".card.missing").length,shown:document.querySelectorAll(".card:not([hidden])").length};
  var out=document.createElement("pre");out.id="check";out.textContent=JSON.stringify(check);document.body.appendChild(out);
 });
});
</script></body>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (apt-get install -y chromium)")
    pytest.skip("chromium is not installed")


def browse(tmp_path: Path, page: Path, *extra: str) -> str:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    flags += ["--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]
    done = subprocess.run(
        [chromium(), *flags, "--virtual-time-budget=10000", *extra, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_single_run_report_in_a_real_browser(tmp_path, photo_dir):
    (photo_dir / "corrupt.png").write_bytes(b"not an image")
    run_dir = tmp_path / "run"
    result = run_cli([*TINY, f"images=[{photo_dir}]", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]  # the corrupt photo failed; the report is written anyway
    index = run_dir / "index.html"
    page = index.read_text(encoding="utf-8")
    assert "Failures: 1 artefact(s)" in page and "Top-5 predictions of alexnet" in page
    check_page = run_dir / "check.html"
    check_page.write_text(page.replace("</body>", CHECK), encoding="utf-8")
    dom = browse(tmp_path, check_page, "--dump-dom")
    found = re.search(r'<pre id="check">(.*?)</pre>', dom)
    assert found, dom[-2000:]
    check = json.loads(html.unescape(found.group(1)))
    assert check["images"] == 3  # filters + feature maps of two photos
    assert check["broken"] == [] and check["missing"] == 0 and check["natural"] == 3
    assert check["shown"] == 3  # filter "feature_maps": two cards plus the failed corrupt one

    shot = tmp_path / "shot.png"
    browse(tmp_path, index, f"--screenshot={shot}", "--window-size=1200,900")
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 24)
    assert len(colours) > 5000, len(colours)  # text alone gives ~1000; the PNG grids many more


def test_no_manifest_is_an_error(tmp_path):
    with pytest.raises(NoManifestError):
        build_report(tmp_path)
