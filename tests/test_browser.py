"""Notebook 02 in a real browser: JupyterLab on localhost, headless Chromium driven by Playwright.

Runs all cells, moves the explorer's channel slider and checks that the channel image changed.
Needs Debian's chromium (/usr/bin/chromium), jupyterlab and playwright; without them the test
is skipped, unless CNNVIS_REQUIRE_BROWSER=1 (set by .ci/run), where their absence fails it.
"""
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _require_browser_tools():
    missing = [name for name, ok in (("chromium", Path(CHROMIUM).exists()),
                                     ("playwright", _importable("playwright")),
                                     ("jupyterlab", _importable("jupyterlab"))) if not ok]
    if missing:
        message = f"browser test needs {', '.join(missing)} (apt-get install chromium; pip install jupyterlab playwright)"
        if os.environ.get("CNNVIS_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


def _importable(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def jupyter_lab(tmp_path):
    _require_browser_tools()
    # serve a copy: JupyterLab autosaves, and the committed notebook must stay as it is
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "helpers.py", root)
    shutil.copy(REPO / "notebooks" / "02_activations.ipynb", root / "notebooks")
    # render every cell (JupyterLab 4 drops off-screen cells from the page by default)
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "CNNVIS_QUICK": "1", "CNNVIS_HOME": str(tmp_path / "home"), "JUPYTER_TOKEN": token,
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings")}
    log = open(tmp_path / "jupyter.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.root_dir={root}", "--LabApp.news_url="], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.terminate()
        pytest.fail(f"JupyterLab did not start; log: {(tmp_path / 'jupyter.log').read_text()[-2000:]}")
    yield base, token, tmp_path
    server.terminate()
    server.wait(timeout=30)
    log.close()


def test_notebook_02_channel_slider_changes_the_image(jupyter_lab):
    from playwright.sync_api import sync_playwright

    base, token, tmp_path = jupyter_lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{base}/lab/tree/notebooks/02_activations.ipynb?token={token}", timeout=120_000)
            page.wait_for_selector(".jp-Notebook", timeout=120_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            slider = page.locator(".widget-slider", has_text="channel")
            slider.wait_for(timeout=400_000)
            explorer = page.locator(".widget-vbox", has=slider).last
            channel_image = explorer.locator("img").nth(1)
            channel_image.wait_for(timeout=60_000)
            before = channel_image.get_attribute("src")
            slider.locator(".noUi-handle").focus()
            for _ in range(3):
                page.keyboard.press("ArrowRight")
            page.wait_for_function("([img, old]) => img.getAttribute('src') !== old",
                                   arg=[channel_image.element_handle(), before], timeout=60_000)
            assert channel_image.get_attribute("src") != before
            assert "Error" not in explorer.inner_text()
        finally:
            page.screenshot(path=str(tmp_path / "notebook_02.png"), full_page=False)
            browser.close()
