"""Notebook 02 in a real browser: JupyterLab on localhost, headless Chromium driven by Playwright.

Runs all cells, moves the explorer's channel slider and checks that the channel image changed.
Needs Debian's chromium (/usr/bin/chromium), jupyterlab and playwright; without them the test
is skipped, unless CNNVIS_REQUIRE_BROWSER=1 (set by .ci/run), where their absence fails it.
"""
import os
import re
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


def _copy_without_outputs(source, dest):
    """Only live widgets may be on the page: committed outputs could show a stale, kernel-less slider."""
    import nbformat

    notebook = nbformat.read(source, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, dest)


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
    shutil.copytree(REPO / "cnnvis", root / "cnnvis")
    _copy_without_outputs(REPO / "notebooks" / "02_activations.ipynb", root / "notebooks" / "02_activations.ipynb")
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


def _first_visible(page, locators, timeout_s):
    """Poll until one of `locators` ({name: locator}) is visible; returns its name, or None on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, locator in locators.items():
            if locator.count() and locator.first.is_visible():
                return name
        page.wait_for_timeout(1000)
    return None


def _run_all_cells(page, attempts=4):
    """Run > Run All Cells until a cell starts executing. A click that comes before the session has
    connected its kernel is dropped silently or answered with a Select Kernel dialog (both seen)."""
    started = page.locator(".jp-InputPrompt").filter(has_text=re.compile(r"\[[0-9*]+\]"))
    kernel_dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    for _ in range(attempts):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()
        seen = _first_visible(page, {"started": started, "dialog": kernel_dialog}, 30)
        if seen == "dialog":
            kernel_dialog.get_by_role("button", name="Select").click()
            seen = _first_visible(page, {"started": started}, 30)
        if seen == "started":
            return True
    return False


def _diagnosis(page, tmp_path):
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], "
                          ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
    texts = [errors.nth(i).inner_text()[-800:] for i in range(errors.count())]
    status = page.locator(".jp-StatusBar-Widget").all_inner_texts()
    log = (tmp_path / "jupyter.log").read_text()[-1500:]
    return f"status bar: {status}\nnotebook errors: {texts}\nserver log tail:\n{log}"


def test_notebook_02_channel_slider_changes_the_image(jupyter_lab):
    from playwright.sync_api import sync_playwright

    base, token, tmp_path = jupyter_lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{base}/lab/tree/notebooks/02_activations.ipynb?token={token}", timeout=120_000)
            page.wait_for_selector(".jp-Notebook", timeout=120_000)
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=120_000)
            assert _run_all_cells(page), f"Run All never started the kernel\n{_diagnosis(page, tmp_path)}"
            # the mini-VGG's explorer, the first of the notebook's two (EfficientNet-Lite0's renders later)
            slider = page.locator(".widget-slider", has_text="channel").first
            error = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
            # the notebook first trains the mini-VGG in its fresh home: 20-40 s an epoch on a busy 2-core machine
            seen = _first_visible(page, {"slider": slider, "error": error}, 900)
            assert seen == "slider", f"the explorer never appeared ({seen or 'timeout'})\n{_diagnosis(page, tmp_path)}"
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
