"""The model page's depth explorer in a real browser, driven like a person: keys, clicks, the URL fragment."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from browser import SETTLE, console_errors, driver, loopback_only
from PIL import Image

from pipeline.output.files import encode_thumbnail, thumb_path
from pipeline.report import build_report

LAYERS = [f"block{i}.conv" for i in range(8)]
IMAGES = ["cat", "dog"]


def _picture(path: Path, seed: int) -> None:
    """A small PNG of its own colours (so every artefact's picture differs) and its thumbnail."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8))
    image.save(path)
    thumb = path.parent.parent.parent / thumb_path(path.relative_to(path.parent.parent.parent).as_posix())
    thumb.parent.mkdir(parents=True, exist_ok=True)
    thumb.write_bytes(encode_thumbnail(image))


def explorer_job(job: Path, model: str = "tinynet") -> None:
    """A job as the engine writes it: per layer filters, and per layer and image feature maps and Grad-CAM (with
    the layer's shape), a class-targeted guided backprop per image, an overview with its statistics plot."""
    lines = []

    def add(method: str, layer: str | None, index: int | None, image: str | None, **extra) -> None:
        stem = f"{layer or 'class'}__{image}" if image else str(layer)
        png = f"{model}/{method}/{stem}.png"
        _picture(job / png, len(lines))
        line = {"model": model, "weights": "random init (seed 0)", "random_weights": True, "layer": layer}
        line.update(layer_index=index, method=method, image=f"/photos/{image}.png" if image else None)
        line.update(image_label=image, params={}, png=png, raw=None, thumb=thumb_path(png), **extra)
        lines.append({**line, "status": "ok", "error": None})

    for i, layer in enumerate(LAYERS):
        shape = [16 * 2 ** (i // 2), 64 // 2 ** (i // 2), 64 // 2 ** (i // 2)]
        add("filters", layer, i, None)
        for image in IMAGES:
            add("feature_maps", layer, i, image, shape=shape)
            add("grad_cam", layer, i, image, input_size=[64, 64], map_size=shape[1:])
    for image in IMAGES:
        add("guided_backprop", None, None, image, targets=[{"class_index": 3}])
        add("overview", None, None, image)
        stats = lines[-1]["png"].replace(".png", ".stats.png")
        _picture(job / stats, 99)
        lines[-1].update(stats=stats, attached=["stats"])
    (job / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    (job / "run.json").write_text(json.dumps({"status": "finished", "config": {"models": [model]}}), encoding="utf-8")


def visible(browser, selector: str) -> list:
    return [e for e in browser.find_elements("css selector", selector) if e.is_displayed()]


def srcs(browser) -> list[str]:
    return [img.get_attribute("src") for img in visible(browser, "section.layer img")]


def settle(browser) -> dict:
    found = browser.execute_async_script(SETTLE)
    assert found["broken"] == [], found
    return found


@pytest.mark.slow
def test_walk_the_depth_switch_images_and_open_full_size_in_a_browser(tmp_path):
    explorer_job(tmp_path / "run")
    build_report(tmp_path / "run")
    for job in ("0", "1"):
        explorer_job(tmp_path / "sweep" / job)
    build_report(tmp_path / "sweep")
    with loopback_only():
        browse_the_explorer(tmp_path, tmp_path / "run" / "report" / "models" / "tinynet.html")
        switch_jobs(tmp_path, tmp_path / "sweep" / "report" / "models" / "tinynet.html")


def switch_jobs(tmp_path: Path, page: Path) -> None:
    """A sweep's model page explores one job at a time; the list switches, keeping the layer and the image."""
    browser = driver(tmp_path / "profile-sweep")
    from selenium.webdriver.support.ui import Select

    try:
        browser.set_script_timeout(30)
        browser.get(page.as_uri() + f"#job=j-0&layer={LAYERS[2]}&image=dog")
        settle(browser)
        assert all("/0/" in src for src in srcs(browser))
        Select(browser.find_element("id", "job")).select_by_value("j-1")
        settle(browser)
        assert len(srcs(browser)) == 3 and all("/1/" in src for src in srcs(browser))  # job 1's pictures
        assert browser.find_element("id", "layer-label").text == f"layer 3 of 8: {LAYERS[2]}"
        assert "job=j-1" in browser.current_url and "image=dog" in browser.current_url
        assert console_errors(browser) == []
    finally:
        browser.quit()


def browse_the_explorer(tmp_path: Path, page: Path) -> None:
    browser = driver(tmp_path / "profile")  # skips here when there is no browser
    from selenium.webdriver.common.keys import Keys

    try:
        browser.set_script_timeout(30)
        browser.get(page.as_uri())
        label = browser.find_element("id", "layer-label")
        assert label.text == f"layer 1 of 8: {LAYERS[0]}"
        first = settle(browser)
        # side by side at one layer: the filters, then the image's feature maps and Grad-CAM, in registry order
        methods = [f.get_attribute("data-m") for f in visible(browser, "section.layer figure")]
        assert methods == ["filters", "feature_maps", "grad_cam"]
        assert {f.get_attribute("data-image") for f in visible(browser, "section.layer figure")} == {"", "cat"}
        assert "output 16×64×64" in browser.find_element("id", "facts").text
        # lazy: only what is in view was fetched (3 pictures of the layer, 2 image pickers, the class-target
        # picture, overviews and their plots), not the other layers'
        assert first["loaded"] <= 3 + 2 + 1 + 4 < len(LAYERS) * 5

        seen = [srcs(browser)]
        body = browser.find_element("tag name", "body")
        for step in range(1, 6):
            body.send_keys(Keys.ARROW_RIGHT)
            assert label.text == f"layer {step + 1} of 8: {LAYERS[step]}"
            settle(browser)
            seen.append(srcs(browser))
            assert len(seen[-1]) == 3 and not set(seen[-1]) & set(seen[-2])  # new pictures at each layer
        assert "stride 4" in browser.find_element("id", "facts").text  # 64 px input, 16 px maps at block5
        assert browser.execute_script("return document.getElementById('depth').value") == "5"
        body.send_keys(Keys.ARROW_LEFT)
        assert label.text.startswith("layer 5 of 8")

        browser.find_elements("css selector", ".pick")[1].click()  # the second image
        settle(browser)
        assert {f.get_attribute("data-image") for f in visible(browser, "section.layer figure")} == {"", "dog"}
        assert [f.get_attribute("data-image") for f in visible(browser, ".per-image figure")] == ["dog"]
        assert "image=dog" in browser.current_url and f"layer={LAYERS[4]}" in browser.current_url

        browser.find_elements("css selector", "#strip button")[7].click()  # the depth strip jumps anywhere
        assert label.text == f"layer 8 of 8: {LAYERS[7]}"
        link = browser.current_url
        browser.get("about:blank")
        browser.get(link)  # a link opens at that spot
        label = browser.find_element("id", "layer-label")
        assert label.text == f"layer 8 of 8: {LAYERS[7]}"
        assert {f.get_attribute("data-image") for f in visible(browser, "section.layer figure")} == {"", "dog"}

        visible(browser, "section.layer a.full")[1].click()  # the feature maps, full size
        full = browser.find_element("id", "full")
        assert full.is_displayed()
        natural = browser.execute_async_script(
            "var d=arguments[0],i=document.getElementById('full-img');"
            "if(i.complete){d(i.naturalWidth);}else{i.onload=function(){d(i.naturalWidth);};i.onerror=function(){d(0);};}"
        )
        assert natural == 90  # the PNG itself, not its thumbnail
        browser.find_element("id", "close-full").send_keys(Keys.ESCAPE)
        assert not full.is_displayed()
        visible(browser, "section.layer a.full")[0].click()
        browser.find_element("id", "close-full").click()
        assert not full.is_displayed() and label.text.startswith("layer 8 of 8")

        settle(browser)
        assert console_errors(browser) == []
        shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
        assert len(shot.getcolors(maxcolors=1 << 24)) > 3000  # pictures, not a blank page (text alone: ~1000)
    finally:
        browser.quit()
