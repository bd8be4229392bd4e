"""Image shards (``shard=i/n``): n jobs together make exactly the unsharded run, picture for picture."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import run_cli

from pipeline.config import check_shard, settings_from
from pipeline.errors import UserError
from pipeline.plan import make_plan, shard_of


@pytest.mark.parametrize("count", [0, 1, 5, 7, 400])
@pytest.mark.parametrize("n", [1, 3, 8])
@pytest.mark.parametrize("batch", [1, 2, 32])
def test_shards_split_the_images_into_whole_batches_in_order(count, n, batch):
    images = list(range(count))
    parts = [shard_of(images, (i, n), batch) for i in range(n)]
    assert [x for part in parts for x in part] == images  # each image once, in order
    starts = [part[0] for part in parts if part]
    assert all(start % batch == 0 for start in starts)  # a shard holds whole batches of the unsharded run
    sizes = [-(-len(part) // batch) for part in parts]  # batches per shard
    assert max(sizes) - min(sizes) <= 1
    assert shard_of(images, None, batch) == images


@pytest.mark.parametrize(
    "value,fragment",
    [
        ("3/3", "'3/3' is not i/n with 0 <= i < n"),
        ("1/0", "'1/0'"),
        ("abc", "'abc'"),
        ("-1/2", "'-1/2'"),
        ("2", "shard: 2 is not"),
    ],
)
def test_bad_shards_are_refused_in_one_line(compose_cfg, value, fragment):
    with pytest.raises(UserError) as err:
        settings_from(compose_cfg([f"shard={value}"]))
    assert str(err.value).startswith("shard: ") and fragment in str(err.value) and "\n" not in str(err.value)


def test_a_method_that_gathers_over_every_image_is_refused_with_a_shard():
    gathering = SimpleNamespace(name="top_patches", gathers=True)
    with pytest.raises(UserError, match="shard: '0/2' cannot split top_patches"):
        check_shard("0/2", [gathering])
    assert check_shard("1/2", [SimpleNamespace(name="filters")]) == (1, 2)


def test_labels_are_those_of_the_whole_run_and_only_shard_0_makes_per_layer_artefacts(compose_cfg, tmp_path):
    for sub in ("a", "b"):  # two photos with one name: labels tell them apart by folder, in every shard
        (tmp_path / sub).mkdir()
        shutil.copy(Path(__file__).with_name("my_nets.py"), tmp_path / sub / "x.png")  # never read here
    common = ["models=[alexnet]", "weights=none", "layers=[first]", "methods=[filters,feature_maps]"]
    images = f"images=[{tmp_path}/a/x.png,{tmp_path}/b/x.png]"
    whole = make_plan(settings_from(compose_cfg([*common, images])), check_weights=False)
    plans = [make_plan(settings_from(compose_cfg([*common, images, f"shard={i}/2"])), False) for i in range(2)]
    assert [p.images for p in plans] == [[whole.images[0]], [whole.images[1]]]
    assert all(p.labels == whole.labels for p in plans)
    keys = [set(p.artefacts()) for p in plans]
    assert keys[0] | keys[1] == set(whole.artefacts()) and not keys[0] & keys[1]
    assert {k.method for k in keys[1]} == {"feature_maps"}  # filters need no image: shard 0 makes them


def manifest(*folders: Path) -> dict[tuple, dict]:
    """Manifest lines by artefact, over the run folders ``folders``."""
    found = {}
    for folder in folders:
        for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            key = (record["model"], record["method"], record["layer"], record["image"])
            assert key not in found, f"{key} made twice"
            found[key] = {**record, "dir": folder}
    return found


def same_artefacts(whole: dict[tuple, dict], parts: dict[tuple, dict]) -> None:
    assert whole.keys() == parts.keys()
    for key, record in whole.items():
        other = parts[key]
        assert {k: v for k, v in record.items() if k != "dir"} == {k: v for k, v in other.items() if k != "dir"}, key
        for kind in record["files"]:  # the files themselves, byte for byte, not only what the manifests say
            mine = (record["dir"] / record[kind]).read_bytes()
            assert mine == (other["dir"] / other[kind]).read_bytes(), (key, kind)
            assert hashlib.sha256(mine).hexdigest() == record["files"][kind]["sha256"]


TINY = [
    "models=squeezenet1_1",
    "weights=none",
    "layers=[first,last]",
    "methods=[filters,feature_maps,grad_cam]",
    "batch_size=1",
    "render_workers=1",
    "feature_maps.top_k=4",
    "grad_cam.top_k=1",
    "filters.max_filters=8",
]


def sharded_sweep(overrides: list[str], tmp_path: Path, photo_dir: Path):
    """A sweep over three photos of ``shard=null,0/3,1/3,2/3``: job 0 runs every image, jobs 1 to 3 a third each
    (the basic launcher: one after the other, one process). Returns its command line (to run it again), the CLI's
    result, the sweep folder, the shards' folders and the manifests of the whole run and of the shards together,
    checked equal artefact for artefact."""
    shutil.copy(photo_dir / "synthetic_0.png", photo_dir / "synthetic_2.png")
    folder = tmp_path / "sweep"
    command = ["-m", *overrides, f"images=[{photo_dir}]", "shard=null,0/3,1/3,2/3", f"hydra.sweep.dir={folder}"]
    result = run_cli(command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    shards = [folder / str(job) for job in (1, 2, 3)]
    whole, parts = manifest(folder / "0"), manifest(*shards)
    same_artefacts(whole, parts)
    return SimpleNamespace(command=command, result=result, folder=folder, shards=shards, whole=whole, parts=parts)


@pytest.mark.slow
def test_a_sharded_sweep_equals_the_unsharded_run_and_resumes_per_shard(tmp_path, photo_dir):
    sweep = sharded_sweep(TINY, tmp_path, photo_dir)
    command, folder, shards, whole, parts = sweep.command, sweep.folder, sweep.shards, sweep.whole, sweep.parts
    assert {r["dir"].name for r in parts.values() if r["method"] == "filters"} == {"1"}  # shard 0/3 alone
    assert len({r["dir"].name for r in parts.values() if r["method"] == "feature_maps"}) == 3  # one image each
    runs = [json.loads((job / "run.json").read_text()) for job in shards]
    predicted = {label: top for run in runs for label, top in run["predictions"]["squeezenet1_1"].items()}
    assert predicted == json.loads((folder / "0" / "run.json").read_text())["predictions"]["squeezenet1_1"]
    lines = (folder / "index.jsonl").read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["png"] for line in lines) == sorted(
        f"{r['dir'].name}/{r['png']}" for r in [*whole.values(), *parts.values()]
    )
    page = (folder / "report" / "models" / "squeezenet1_1.html").read_text(encoding="utf-8")
    assert "1 run(s) in 4 job(s) (sharded)" in page  # the shards and the whole run differ only in shard=: one config

    # resume, per shard: a lost picture of shard 1/3 is made again by that shard alone, with the same bytes
    lost = next(r for r in parts.values() if r["dir"].name == "2" and r["method"] == "grad_cam")
    (lost["dir"] / lost["png"]).unlink()
    again = run_cli(command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "job 2: " in again.stderr and again.stderr.count(", 1 written)") == 1, again.stderr[-2000:]
    assert again.stderr.count(", 0 written)") == 3, again.stderr[-2000:]
    same_artefacts(whole, manifest(*shards))
