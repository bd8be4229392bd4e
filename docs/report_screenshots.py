"""Take the README's screenshots of the report (the depth explorer, the index) in headless Chromium.

    python docs/report_screenshots.py                 # runs the default job into a temporary folder first
    python docs/report_screenshots.py outputs/<date>/<time>   # or uses a run the default job already wrote
    python docs/report_screenshots.py --channels RUN          # the per-channel table of a run of experiment=insight

Needs the test requirements (selenium) and Debian's ``chromium`` and ``chromium-driver``. The report is rebuilt
with the current code first; the explorer is opened by its URL fragment at one layer and image, as a link would.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MODEL = "efficientnet_lite0"
SPOT = "#layer=features.4.0.block.0.0&image=grace_hopper"  # a third of the way down, Grace Hopper
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run")


def chromium(profile: Path):
    """A headless Chromium, 1400 px wide, with its own profile folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for flag in (*FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or "chromium"
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)


def shoot(run: Path, profile: Path) -> None:
    browser = chromium(profile)
    try:
        browser.get((run / "report" / "models" / f"{MODEL}.html").as_uri() + SPOT)
        time.sleep(2)  # the chunk, then the pictures in view
        browser.execute_script("document.getElementById('explorer').scrollIntoView();")
        time.sleep(1)
        browser.save_screenshot(str(DOCS / "report_explorer.png"))
        browser.get((run / "index.html").as_uri())
        time.sleep(1)
        browser.save_screenshot(str(DOCS / "report_index.png"))
    finally:
        browser.quit()


CHANNELS = "#layer=features.5.0.block.0.0&image=grace_hopper"  # the 50 % layer of experiment=insight


def shoot_channels(run: Path, profile: Path) -> None:
    """The per-channel table (filters, feature_viz, top patches side by side) at the 50 % layer."""
    browser = chromium(profile)
    try:
        browser.get((run / "report" / "models" / f"{MODEL}.html").as_uri() + CHANNELS)
        time.sleep(3)
        browser.execute_script("document.querySelector('section.layer:not([hidden]) details.chan').scrollIntoView();")
        time.sleep(1)
        browser.save_screenshot(str(DOCS / "report_channels.png"))
    finally:
        browser.quit()


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--channels":
        with tempfile.TemporaryDirectory(prefix="fmi-shots-") as tmp:
            shoot_channels(Path(sys.argv[2]).resolve(), Path(tmp) / "profile")
        print(f"wrote {DOCS / 'report_channels.png'}")
        return 0
    with tempfile.TemporaryDirectory(prefix="fmi-shots-") as tmp:
        if len(sys.argv) > 1:
            run = Path(sys.argv[1]).resolve()
        else:
            run = Path(tmp) / "run"
            subprocess.run([sys.executable, str(ROOT / "run.py"), f"hydra.run.dir={run}"], cwd=tmp, check=True)
        subprocess.run([sys.executable, "-m", "pipeline.report", str(run)], cwd=ROOT, check=True)
        shoot(run, Path(tmp) / "profile")
    print(f"wrote {DOCS / 'report_explorer.png'} and {DOCS / 'report_index.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
