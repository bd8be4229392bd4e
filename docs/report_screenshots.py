"""Take the README's screenshots of the report (the depth explorer, the index) in headless Chromium.

    python docs/report_screenshots.py                 # runs the default job into a temporary folder first
    python docs/report_screenshots.py outputs/<date>/<time>   # or uses a run the default job already wrote

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


def shoot(run: Path, profile: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for flag in (*FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or "chromium"
    browser = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)
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


def main() -> int:
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
