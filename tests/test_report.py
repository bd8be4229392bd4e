"""The report: a light index.html, model pages that load each job's chunk, thumbnails, index.jsonl, escaping,
failures, per-job rebuilds that read only that job, the Hydra callback, and a real browser."""

from __future__ import annotations

import html
import io
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

import numpy as np
import pytest
from conftest import ROOT, run_cli
from helpers import read_chunk, walk_report
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from pipeline.output.files import encode_thumbnail, thumb_path
from pipeline.report import NoManifestError, build_report, sync_report, update_job
from pipeline.report import callback as cb
from pipeline.report import jobs as report_jobs
from pipeline.report.__main__ import main as report_main

EVIL = "<script>alert(1)</script>&\"'"
TINY = ["models=alexnet", "weights=none", "layers=[first]", "methods=[filters,feature_maps]"]
SAFE_URL = re.compile(r"[A-Za-z0-9_.~/%-]*(#[A-Za-z0-9_.-]+)?")


def _png(path: Path, seed: int) -> Image.Image:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    image.save(path)
    return image


def fake_job(job_dir: Path, model: str = "resnet18", label: str = "cat", fail: str | None = None) -> None:
    """A job directory as the engine writes it: PNGs (the first with its thumbnail, the other as in runs made
    before thumbnails), .npy, manifest.jsonl, run.json, resolved config, overrides."""
    records = [
        {"method": "filters", "layer": "conv1", "layer_index": 0, "image": None, "image_label": None},
        {
            "method": "feature_maps",
            "layer": "conv1",
            "layer_index": 0,
            "image": f"/photos/{label}.png",
            "image_label": label,
        },
    ]
    lines = []
    for i, r in enumerate(records):
        stem = "conv1" if r["image_label"] is None else "conv1__img"
        png = f"{model}/{r['method']}/{stem}.png"
        image = _png(job_dir / png, i)
        np.save(job_dir / png.replace(".png", ".npy"), np.zeros(3, np.float32))
        lines.append({"model": model, "weights": "random init (seed 0)", "random_weights": True, "params": {}, **r})
        lines[-1].update(png=png, raw=png.replace(".png", ".npy"), status="ok", error=None)
        if i == 0:
            (job_dir / thumb_path(png)).parent.mkdir(parents=True, exist_ok=True)
            (job_dir / thumb_path(png)).write_bytes(encode_thumbnail(image))
            lines[-1]["thumb"] = thumb_path(png)
    if fail:
        lines.append(
            {
                **lines[-1],
                "layer": "layer4.1.conv2",
                "layer_index": 20,
                "png": None,
                "raw": None,
                "thumb": None,
                "status": "failed",
                "error": fail,
            }
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


def failed_job(job_dir: Path, status: str = "FAILED", error: str = "UserError: layers: 'nope' matches nothing") -> None:
    """A job that ended before writing any manifest: only the callback's job_status.json."""
    job_dir.mkdir(parents=True)
    data = {"status": status, "overrides": ["layers=nope"], "error": error}
    (job_dir / "job_status.json").write_text(json.dumps(data), encoding="utf-8")


def pngs_on_disk(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.rglob("*.png")}


def model_page(folder: Path, model: str) -> str:
    return (folder / "report" / "models" / f"{model}.html").read_text(encoding="utf-8")


def test_light_index_links_model_pages_whose_chunks_hold_every_artefact(tmp_path):
    fake_job(tmp_path / "0", "resnet18")
    fake_job(tmp_path / "1", "alexnet", fail="RuntimeError: out of memory")
    target = build_report(tmp_path)
    assert target == tmp_path / "index.html"
    index = target.read_text(encoding="utf-8")
    assert index.index(">resnet18<") < index.index(">alexnet<")  # models in job order
    assert "tabby" in index and "62.5%" in index  # top-5 predictions from run.json
    assert "RuntimeError: out of memory" in index and "layer4.1.conv2" in index  # failures with their errors
    assert 'href="report/models/resnet18.html"' in index and 'href="1/config.resolved.yaml"' in index
    assert "conv1__img" not in index  # no artefact embedded: only one preview picture per model
    assert len(re.findall(r"<img ", index)) == 2

    report = walk_report(tmp_path)
    assert report.broken() == []
    assert report.targets(".png", "href") == pngs_on_disk(tmp_path)  # every PNG reachable, full size
    assert {p.name for p in report.pages} == {"index.html", "compare.html", "resnet18.html", "alexnet.html"}
    assert len(report.chunks) == 2
    chunk = read_chunk(tmp_path / "report" / "jobs" / "0" / "resnet18.js")
    assert chunk["id"] == "j-0"
    assert chunk["html"].count('<figure class="card') == 2  # a card per artefact
    assert chunk["html"].count('class="pick"') == 1  # and a thumbnail to pick the job's one image
    # the thumbnail where there is one; the PNG itself for an artefact written before thumbnails
    assert 'src="../../0/thumbs/resnet18/filters/conv1.jpg"' in chunk["html"]
    assert 'src="../../0/resnet18/feature_maps/conv1__img.png"' in chunk["html"]
    assert 'href="../../0/resnet18/filters/conv1.npy"' in chunk["html"]
    assert "models:\n- resnet18" in chunk["html"]  # the resolved config, inline on the model page
    alexnet = read_chunk(tmp_path / "report" / "jobs" / "1" / "alexnet.js")["html"]
    assert "failed: RuntimeError: out of memory" in alexnet
    assert alexnet.index('data-name="conv1"') < alexnet.index('data-name="layer4.1.conv2"')  # conv order
    for text in [*report.pages.values(), *report.chunks.values()]:
        assert "http://" not in text and "https://" not in text  # no external assets

    records = [json.loads(line) for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    assert len(records) == 5  # torn last lines skipped
    assert {r["job"] for r in records} == {"0", "1"}
    for r in records:
        for key in ("png", "raw", "thumb"):
            if r.get(key):
                assert r[key].startswith(f"{r['job']}/") and (tmp_path / r[key]).is_file()


def test_single_run_folder_and_failed_or_refused_jobs_in_the_index(tmp_path):
    fake_job(tmp_path)
    build_report(tmp_path)
    assert json.loads((tmp_path / "index.jsonl").read_text().splitlines()[0])["png"] == "resnet18/filters/conv1.png"
    assert walk_report(tmp_path).broken() == []

    sweep = tmp_path / "sweep"
    fake_job(sweep / "0")
    failed_job(sweep / "1")
    failed_job(sweep / "2", status="REFUSED", error="not enough memory for batch_size 1")
    page = build_report(sweep).read_text(encoding="utf-8")
    assert "Failures: 0 artefact(s), 2 job(s)" in page
    assert "layers=nope" in page and "UserError: layers: &#x27;nope&#x27; matches" in page
    assert "refused" in page and "not enough memory for batch_size 1" in page
    assert "3 job(s)" in page and walk_report(sweep).broken() == []


def _no_markup_from_names(text: str) -> None:
    assert "alert(1)</script>" not in text and "<script>alert" not in text
    for value in re.findall(r' (?:src|href|data-chunk)="([^"]*)"', text):
        assert SAFE_URL.fullmatch(value), value  # URL-quoted: no quote, angle bracket or ampersand left


def test_every_name_is_escaped(tmp_path):
    job = tmp_path / f'we"ird <dir>&{EVIL}'
    fake_job(job, model=EVIL, label=EVIL, fail=EVIL)
    build_report(tmp_path)
    report = walk_report(tmp_path)
    assert len(report.pages) == 2 and len(report.chunks) == 1 and report.broken() == []
    for page in report.pages.values():
        assert page.count("<script>") == 2  # only the page's own two inline scripts
        _no_markup_from_names(page)
    index = report.pages[tmp_path / "index.html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#x27;" in index
    (chunk,) = report.chunks.values()
    _no_markup_from_names(chunk)
    assert "<script" not in chunk and "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#x27;" in chunk
    assert report.targets(".png", "href") == pngs_on_disk(tmp_path)
    chunk_file = next(iter(report.chunks))
    assert chunk_file.read_text().isascii()  # JSON with \u escapes: nothing in it can end the script early


def test_a_job_rebuild_reads_only_that_job(tmp_path):
    for n in range(3):
        fake_job(tmp_path / str(n), model="resnet18" if n < 2 else "alexnet", label=f"photo{n}")
        update_job(tmp_path, tmp_path / str(n))
    fake_job(tmp_path / "3", label="photo3")
    others = [*(tmp_path / "report" / "jobs").rglob("*.*"), tmp_path / "report" / "models" / "alexnet.html"]
    untouched = {p: p.stat().st_mtime_ns for p in others}
    read = []
    real = report_jobs.read_records

    def counting(path: Path):
        read.append(path.parent.name)
        return real(path)

    with mock.patch.object(report_jobs, "read_records", side_effect=counting):
        update_job(tmp_path, tmp_path / "3")
    assert read == ["3"]  # not the manifests of jobs 0-2
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched  # nor their parts, nor other models' pages
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "4 job(s)" in index and "photo3" in index
    assert 'id="j-3"' in model_page(tmp_path, "resnet18")

    # index.jsonl grew by job 3's lines only, and holds what a full rebuild merges
    appended = [json.loads(line) for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    assert [r["job"] for r in appended] == ["0", "0", "1", "1", "2", "2", "3", "3"]
    build_report(tmp_path)
    rebuilt = [json.loads(line) for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    assert sorted(map(json.dumps, rebuilt)) == sorted(map(json.dumps, appended))

    # the same job again unchanged: nothing is rebuilt; rerun into its folder: only its new lines are appended
    with mock.patch.object(report_jobs, "read_records", side_effect=counting):
        update_job(tmp_path, tmp_path / "3")
    assert read == ["3"]
    manifest = tmp_path / "3" / "manifest.jsonl"
    lines = manifest.read_text().splitlines()[:2]
    manifest.write_text("\n".join([*lines, lines[0]]) + "\n")  # a rerun rewrote the filters artefact
    update_job(tmp_path, tmp_path / "3")
    merged = (tmp_path / "index.jsonl").read_text().splitlines()
    assert len(merged) == len(rebuilt) + 1

    # a manifest replaced rather than appended to: index.jsonl would hold stale lines, so it goes until a sync
    manifest.write_text(lines[1] + "\n")
    update_job(tmp_path, tmp_path / "3")
    assert not (tmp_path / "index.jsonl").exists() and "index.jsonl" not in (tmp_path / "index.html").read_text()
    fake_job(tmp_path / "4")
    update_job(tmp_path, tmp_path / "4")  # nor does a later job start an incomplete one
    assert not (tmp_path / "index.jsonl").exists()
    sync_report(tmp_path)
    jobs = [json.loads(line)["job"] for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    assert jobs == ["0", "0", "1", "1", "2", "2", "3", "4", "4"]


def test_sync_rebuilds_only_what_changed(tmp_path):
    fake_job(tmp_path / "0")
    fake_job(tmp_path / "1", model="alexnet")
    for n in ("0", "1"):
        update_job(tmp_path, tmp_path / n)  # as the callback does when each job ends
    read = []
    with mock.patch.object(report_jobs, "read_records", side_effect=lambda p: read.append(p) or ([], [], b"")):
        sync_report(tmp_path)  # the end of the sweep: every part is current, index.jsonl complete
        index = tmp_path / "index.html"
        before = index.stat().st_mtime_ns
        sync_report(tmp_path)  # nothing changed since the last sync: nothing is written
    assert read == [] and index.stat().st_mtime_ns == before
    assert "index.jsonl" in index.read_text(encoding="utf-8")
    shutil.rmtree(tmp_path / "1")
    sync_report(tmp_path)  # a job gone: its part, its model's page and its index.jsonl lines go too
    assert not (tmp_path / "report" / "models" / "alexnet.html").exists()
    assert sorted(p.name for p in (tmp_path / "report" / "jobs").iterdir()) == ["0"]
    assert "alexnet" not in index.read_text(encoding="utf-8")
    assert {json.loads(line)["job"] for line in (tmp_path / "index.jsonl").read_text().splitlines()} == {"0"}


def test_model_page_of_many_jobs_loads_one_at_a_time(tmp_path):
    for n in range(3):
        fake_job(tmp_path / str(n), label=f"photo{n}")
    build_report(tmp_path)
    page = model_page(tmp_path, "resnet18")
    assert page.count('<div class="jobdata"') == 3 and page.count("<img") == 0  # artefacts come from chunks
    assert page.count("<option ") == 3  # a job to explore is picked from a list
    with mock.patch("pipeline.report.index_page.MAX_PREDICTIONS", 2):
        build_report(tmp_path)
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "photo1" in index and "photo2" not in index  # the index's predictions stop at 2 rows here...
    assert '<a href="report/models/resnet18.html">all 3 rows</a>' in index
    assert "photo2" in model_page(tmp_path, "resnet18")  # ...the model page has them all


def test_thumbnails_are_written_with_the_png(tmp_path):
    from pipeline.output.manifest import Manifest, read_manifest
    from pipeline.output.record import Record
    from pipeline.output.writer import Writer

    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 1200, 3), dtype=np.uint8))
    base = Record("m", "w", False, "conv1", 0, "feature_maps", "/p/a.png", "a")
    with Manifest(tmp_path / "manifest.jsonl") as manifest:
        writer = Writer(tmp_path, manifest)
        writer.submit(base, "m/feature_maps/conv1__a.png", lambda: (big, np.zeros(1), {}))
        writer.close()
        with mock.patch("pipeline.output.writer.write_thumbnail", side_effect=OSError("disk full")):
            writer = Writer(tmp_path, manifest)
            writer.submit(base, "m/feature_maps/conv1__b.png", lambda: (big, np.zeros(1), {}))
            writer.close()
    first, second = sorted(read_manifest(tmp_path / "manifest.jsonl"), key=lambda r: r.png)
    assert first.ok and first.thumb == "thumbs/m/feature_maps/conv1__a.jpg"
    thumb = tmp_path / first.thumb
    with Image.open(thumb) as image:
        assert image.format == "JPEG" and image.size == (256, 192)
        image.load()
    assert thumb.stat().st_size < (tmp_path / first.png).stat().st_size / 20
    assert second.ok and second.thumb is None  # a failed thumbnail costs only the thumbnail
    assert not list(tmp_path.rglob(".*.tmp"))  # written atomically: no temp file left behind
    tall = Image.new("L", (100, 2000))
    with Image.open(io.BytesIO(encode_thumbnail(tall))) as image:
        assert image.size == (38, 768)  # at most 3 x 256 tall, never enlarged


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
    assert (tmp_path / "index.jsonl").is_file() and walk_report(tmp_path).broken() == []


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
    assert (sweep / "report" / "jobs" / "3" / "summary.json").is_file()  # the job's own part
    with caplog.at_level(logging.ERROR):
        with mock.patch.object(cb, "update_job", side_effect=OSError("disk full")):
            cb.ReportCallback().on_job_end(config, ret)  # logged, not raised
        with mock.patch.object(cb, "sync_report", side_effect=OSError("disk full")):
            cb.ReportCallback().on_multirun_end(config)
    assert caplog.text.count("could not be built") == 2


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
    # Hydra skips on_multirun_end after a failed job: each job's own rebuild made all of this
    records = [json.loads(line) for line in (folder / "index.jsonl").read_text().splitlines()]
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*.png")}
    assert len(on_disk) == 3 and on_disk == {r["png"] for r in records if r["png"]}
    assert all((folder / r["thumb"]).is_file() for r in records if r["png"])
    failed = [r for r in records if r["status"] == "failed"]
    assert [r["image_label"] for r in failed] == ["corrupt"]
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert "Failures: 1 artefact(s), 2 job(s)" in page and "REFUSED" in page  # job 0 exited 1: it failed too
    assert "image failed to load" in page and "no_such_layer" in page
    report = walk_report(folder)
    assert report.broken() == [] and report.targets(".png", "href") == pngs_on_disk(folder)


# --- a real browser -------------------------------------------------------------------------------------------
# Appended to a copy of a page: waits for the job chunks it loads, then for every picture, then types a filter.
CHECK = """<script>
function settle(done){if(document.querySelector('.jobdata[data-state="loading"]')){setTimeout(function(){settle(done);},50);}
 else{done();}}
window.addEventListener("load",function(){settle(function(){
 var imgs=[].slice.call(document.images);imgs.forEach(function(i){i.loading="eager";});
 Promise.all(imgs.map(function(i){return new Promise(function(done){
  function result(){done(i.naturalWidth>0?null:i.getAttribute("src"));}
  if(i.complete&&i.getAttribute("src")){result();}else{i.addEventListener("load",result);i.addEventListener("error",result);}});}))
 .then(function(bad){
  var box=document.getElementById("filter");if(box){box.value="feature_maps";box.dispatchEvent(new Event("input"));}
  var check={images:imgs.length,broken:bad.filter(Boolean),natural:imgs.filter(function(i){return i.naturalWidth>0;}).length,
   missing:document.querySelectorAll(".card.missing, .jobdata.missing").length,
   sections:document.querySelectorAll(".jobdata").length,loaded:document.querySelectorAll(".jobdata.loaded").length,
   shown:document.querySelectorAll(".card:not([hidden])").length};
  var out=document.createElement("pre");out.id="check";out.textContent=JSON.stringify(check);document.body.appendChild(out);
 });
});});
</script></body>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (apt-get install -y chromium)")
    pytest.skip("chromium is not installed")


def browse(tmp_path: Path, page: Path, *extra: str, fragment: str = "") -> str:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    flags += ["--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]
    done = subprocess.run(
        [chromium(), *flags, "--virtual-time-budget=10000", *extra, page.as_uri() + fragment],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def check_in_browser(tmp_path: Path, page: Path, fragment: str = "") -> dict:
    """Load a copy of ``page`` (beside it, so relative links hold) with CHECK appended; return what it found."""
    copy = page.with_name("check.html")
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", CHECK), encoding="utf-8")
    dom = browse(tmp_path, copy, "--dump-dom", fragment=fragment)
    copy.unlink()
    found = re.search(r'<pre id="check">(.*?)</pre>', dom)
    assert found, dom[-2000:]
    return json.loads(html.unescape(found.group(1)))


def screenshot_colours(tmp_path: Path, page: Path) -> int:
    shot = tmp_path / f"shot-{page.stem}.png"
    browse(tmp_path, page, f"--screenshot={shot}", "--window-size=1200,900")
    return len(Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 24))


@pytest.mark.slow
def test_single_run_report_in_a_real_browser(tmp_path, photo_dir):
    (photo_dir / "corrupt.png").write_bytes(b"not an image")
    run_dir = tmp_path / "run"
    result = run_cli([*TINY, f"images=[{photo_dir}]", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]  # the corrupt photo failed; the report is written anyway
    index = run_dir / "index.html"
    page = index.read_text(encoding="utf-8")
    assert "Failures: 1 artefact(s)" in page and "Top-5 predictions of alexnet" in page
    check = check_in_browser(tmp_path, index)
    assert check["images"] == 1 and check["broken"] == [] and check["natural"] == 1  # the model's preview
    assert screenshot_colours(tmp_path, index) > 1500  # text alone gives ~1000

    model = run_dir / "report" / "models" / "alexnet.html"
    check = check_in_browser(tmp_path, model)
    assert check["sections"] == check["loaded"] == 1  # one job, loaded from its chunk
    assert check["images"] == 3 + 2  # filters + feature maps of two photos, as thumbnails; a picker per photo
    assert check["broken"] == [] and check["missing"] == 0 and check["natural"] == 5
    assert screenshot_colours(tmp_path, model) > 5000  # the thumbnails give many more colours than text


def test_a_missing_chunk_shows_as_missing_in_a_real_browser(tmp_path):
    fake_job(tmp_path / "0")
    fake_job(tmp_path / "1")
    build_report(tmp_path)
    (tmp_path / "report" / "jobs" / "1" / "resnet18.js").unlink()
    page = tmp_path / "report" / "models" / "resnet18.html"
    check = check_in_browser(tmp_path, page)  # the first job: loaded
    assert check["sections"] == 2 and check["loaded"] == 1 and check["missing"] == 0
    assert check["broken"] == [] and check["natural"] == check["images"] == 3  # two artefacts, a picker
    check = check_in_browser(tmp_path, page, "#j-1")  # a link to the second job, whose chunk is gone
    assert check["loaded"] == 0 and check["missing"] == 1 and check["images"] == 0


def test_no_manifest_is_an_error(tmp_path):
    with pytest.raises(NoManifestError):
        build_report(tmp_path)


@pytest.mark.parametrize("n, columns, font_px", [(64, None, 12), (20, None, 16), (5, 3, 12), (80, 8, 12)])
def test_compare_cuts_the_strongest_maps_out_of_the_rendered_grid(tmp_path, n, columns, font_px):
    from pipeline.output.record import Record
    from pipeline.render.grid import compose
    from pipeline.report.summary import TOP, top_tiles

    colours = np.random.default_rng(n).integers(0, 255, (n + 1, 3), dtype=np.uint8)
    tiles = [np.broadcast_to(c, (40, 40, 3)).copy() for c in colours]  # the input, then n maps, as the method does
    header = ["resnet18 · feature_maps · layer conv1", "a second, long header line " * 4]
    labels = ["input", *(f"ch {i}" for i in range(n))]
    compose(tiles, labels, header, 40, columns, font_px).save(tmp_path / "maps.png")
    record = Record("m", "w", False, "conv1", 0, "feature_maps", "/p.png", "p", png="maps.png")
    record.params, record.extra = {"tile_px": 40, "columns": columns}, {"channels": list(range(n))}
    found = top_tiles(record, tmp_path, font_px)
    picture = np.asarray(Image.open(tmp_path / "maps.png"))
    assert found["size"] == [picture.shape[1], picture.shape[0]]
    assert len(found["boxes"]) == min(TOP, n)
    for i, (x, y, w, h) in enumerate(found["boxes"], start=1):
        cut = picture[y : y + h, x : x + w]
        assert (cut[4:40, 4:40] == colours[i]).all()  # the i-th strongest map, whole, in its box
        assert (cut[:, :2] != colours[i]).any(axis=-1).all()  # and nothing of its neighbours
        assert h > 40 + font_px  # with its label under it


def test_compare_columns_stay_readable_with_ten_models(tmp_path):
    for n in range(10):
        fake_job(tmp_path / str(n), model=f"net{n}")
    build_report(tmp_path)
    page = (tmp_path / "compare.html").read_text(encoding="utf-8")
    assert page.count("<th><a href=") == 10
    width = int(re.search(r'class="compare" style="min-width:(\d+)px"', page).group(1))
    assert (width - 130) / 10 >= 200  # at least 200 px a model: the page scrolls sideways rather than shrink


def test_model_page_shows_a_layer_side_by_side_in_the_registry_order_plugins_included(tmp_path):
    import toy_method  # noqa: F401 - registers toy_energy, as plugins=[toy_method] would

    from pipeline.methods import registry

    fake_job(tmp_path)
    manifest = tmp_path / "manifest.jsonl"
    lines = [json.loads(line) for line in manifest.read_text().splitlines()[:2]]
    extra = [{**lines[1], "method": m, "png": lines[1]["png"]} for m in ("zz_unknown", "toy_energy", "grad_cam")]
    manifest.write_text("".join(json.dumps(x) + "\n" for x in [*extra, *lines]), encoding="utf-8")
    build_report(tmp_path)
    chunk = read_chunk(tmp_path / "report" / "jobs" / "x-3a52ce7809" / "resnet18.js")["html"]
    layer = re.search(r'<section class="layer group" hidden data-i="0" data-name="conv1".*?</section>', chunk).group(0)
    shown = re.findall(r'data-m="([^"]+)"', layer)
    order = registry.names()
    assert shown == [*sorted(["filters", "feature_maps", "grad_cam", "toy_energy"], key=order.index), "zz_unknown"]
