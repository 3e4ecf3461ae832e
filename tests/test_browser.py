"""The course's widgets in a real browser: JupyterLab on loopback, driven by Debian's Chromium through Playwright.

A notebook runs (Run -> Run All Cells) on its fast path (``MMKD_FAST=1``) in a temporary copy of ``notebooks/``
(JupyterLab writes checkpoints and may autosave). In :data:`NOTEBOOK` the test moves the slice viewer's slider
with the keyboard and waits for the caption ``slice k / n · modality`` to show the new slice, and for the image in
the Output widget to change. In every notebook of :data:`WIDGETS` (heavy tier) it finds each widget made by
:func:`mmkd_helpers.widgets.interactive_figure` (DOM class ``mmkd-widget``), moves its first control (a slider
one step, a menu to another entry), and waits for the caption and the picture to change.

Skipped when ``/usr/bin/chromium`` (``apt-get install chromium``), Playwright (``pip install playwright``;
its own browser download is never used) or the notebook is missing.
"""

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import skip_or_fail_in_ci

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "01_data_loading.ipynb"
"""The notebook whose first slice viewer is exercised (it must call ``mmkd_helpers.viewer.slice_viewer``)."""
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
                 "--disable-dev-shm-usage"]
OVERRIDES = Path(__file__).with_name("jupyter_overrides.json")
SERVER_START = 90  # seconds
RUN_ALL = 240_000  # ms for the notebook to run up to its slider (it runs in well under a minute)
REDRAW = 30_000  # ms for one redraw of the viewer
CAPTION = re.compile(r"^slice (\d+) / (\d+) · (\S+)$")
WIDGETS = {"02_missing_modality_baseline": 1, "04_cross_modal_kd": 1, "05_meta_learned_importance_weights": 1,
           "06_prototype_distillation": 1, "07_pmix_alignment": 1}
"""Notebook -> how many interactive figures (``mmkd-widget``) it shows on its fast path."""

pytestmark = pytest.mark.timeout(600)


def _skip_reason():
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found: apt-get install chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install playwright (no browser download needed)"
    try:
        import jupyterlab  # noqa: F401
        import ipywidgets  # noqa: F401
    except ImportError as error:
        return f"{error.name} is not installed"
    if not (ROOT / "notebooks" / NOTEBOOK).is_file():
        return f"notebooks/{NOTEBOOK} does not exist yet"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_user_settings(settings_dir: Path) -> None:
    """tests/jupyter_overrides.json (plugin id -> settings, the format of JupyterLab's overrides.json)
    written as the user settings of a fresh JUPYTERLAB_SETTINGS_DIR: no news pop-up, no update check."""
    for plugin_id, values in json.loads(OVERRIDES.read_text()).items():
        package, plugin = plugin_id.split(":")
        path = settings_dir / package / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def _stop(process: subprocess.Popen, base_url: str, token: str) -> None:
    """Stop the server and its kernels (kernels run in sessions of their own): API shutdown, then
    SIGTERM / SIGKILL to the server's process group and to every process it started."""
    try:
        import psutil

        children = psutil.Process(process.pid).children(recursive=True)
    except Exception:  # psutil missing or the server already gone
        children = []
    if process.poll() is None:
        try:
            request = urllib.request.Request(f"{base_url}/api/shutdown", method="POST",
                                             headers={"Authorization": f"token {token}"})
            urllib.request.urlopen(request, timeout=10).close()
            process.wait(timeout=15)
        except Exception:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    for child in children:
        try:
            child.kill()
        except Exception:  # already gone
            pass


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving a temporary copy of notebooks/; yields (base_url, token)."""
    reason = _skip_reason()
    if reason:
        skip_or_fail_in_ci(reason)
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    _write_user_settings(tmp / "settings")
    for name in ("data", "workspaces", "runtime", "config", "jupyter-data"):
        (tmp / name).mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "JUPYTER_TOKEN")}
    env.update(MMKD_FAST="1", MMKD_DATA_DIR=str(tmp / "data"), JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_DATA_DIR=str(tmp / "jupyter-data"))
    port, token = _free_port(), secrets.token_hex(16)
    base_url = f"http://127.0.0.1:{port}"
    log = open(tmp / "jupyterlab.log", "w")
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               "--allow-root", "--ServerApp.terminals_enabled=False", "--LabApp.news_url="]
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        start = time.perf_counter()
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with {process.returncode}:\n{(tmp / 'jupyterlab.log').read_text()[-5000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/api/status?token={token}", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.perf_counter() - start > SERVER_START:
                pytest.fail(f"JupyterLab did not answer within {SERVER_START} s:\n"
                            f"{(tmp / 'jupyterlab.log').read_text()[-5000:]}")
            time.sleep(0.25)
        print(f"JupyterLab answered after {time.perf_counter() - start:.1f} s")
        yield base_url, token, tmp
    finally:
        _stop(process, base_url, token)
        log.close()


@pytest.fixture
def page(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.errors = []
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            yield page
            context.close()
        finally:
            browser.close()


def _api(base_url: str, token: str, path: str):
    request = urllib.request.Request(f"{base_url}{path}", headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def _wait_for_kernel(base_url: str, token: str, timeout: float, notebook: str = NOTEBOOK) -> None:
    """Until the notebook's kernel is idle with a client (the page) connected, as the server sees it."""
    start, state = time.perf_counter(), None
    while time.perf_counter() - start < timeout:
        sessions = [s for s in _api(base_url, token, "/api/sessions") if s.get("path", "").endswith(notebook)]
        if sessions and sessions[0].get("kernel"):
            state = _api(base_url, token, f"/api/kernels/{sessions[0]['kernel']['id']}")
            if state.get("execution_state") == "idle" and state.get("connections", 0) >= 1:
                return
        time.sleep(0.25)
    raise AssertionError(f"the kernel of {notebook} was not idle and connected within {timeout} s: {state}")


def _viewer(page):
    """The output area of the notebook's first slice viewer: the one whose caption reads ``slice k / n · ...``."""
    caption = page.locator(".widget-html-content").filter(has_text=re.compile(r"^slice \d+ / \d+ · "))
    return page.locator(".jp-OutputArea-output").filter(has=caption).first


def _wait_for_new_image(image, before: str, key: str) -> None:
    deadline = time.perf_counter() + REDRAW / 1000
    while (src := image.get_attribute("src") or "") == before:
        if time.perf_counter() > deadline:
            digest = hashlib.sha256(before.encode()).hexdigest()[:12]
            raise AssertionError(f"the caption changed after {key} but the image did not (src sha256 {digest}...)")
        time.sleep(0.1)
    assert src.startswith("data:image/png;base64,"), src[:80]


def _open_and_run_all(page, base_url: str, token: str, notebook: str) -> None:
    from playwright.sync_api import expect

    # ?reset: a fresh workspace, so the notebooks an earlier test opened are not restored beside this one
    page.goto(f"{base_url}/lab/tree/{notebook}?reset&token={token}", wait_until="domcontentloaded")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    # Run All before the page is connected to the kernel would start another kernel (or ask which one)
    _wait_for_kernel(base_url, token, timeout=60, notebook=notebook)
    expect(page.locator(".jp-Notebook-ExecutionIndicator").first).to_have_attribute("data-status", "idle",
                                                                                     timeout=30_000)
    page.locator(".lm-MenuBar-item").filter(has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item").filter(has_text="Run All Cells").first.click()


def _report_failure(page, lab_tmp, tmp_path) -> None:
    shot = tmp_path / "browser-failure.png"
    page.screenshot(path=str(shot), full_page=True)
    log = (lab_tmp / "jupyterlab.log").read_text()[-3000:]
    print(f"screenshot: {shot}\npage errors: {page.errors}\nJupyterLab log (end):\n{log}")


def test_slider_moves_the_slice_in_a_real_browser(lab, page, tmp_path):
    from playwright.sync_api import expect

    base_url, token, lab_tmp = lab
    start = time.perf_counter()
    try:
        _open_and_run_all(page, base_url, token, NOTEBOOK)

        viewer = _viewer(page)
        error = page.locator(".jp-OutputArea-output").filter(has_text="Traceback (most recent call last)").first
        viewer.or_(error).first.wait_for(timeout=RUN_ALL)
        if not viewer.is_visible():
            raise AssertionError(f"{NOTEBOOK} raised before its slice viewer showed:\n{error.inner_text()[-3000:]}")
        handle = viewer.locator(".widget-slider [role=slider]").first
        caption = viewer.locator(".widget-html-content").filter(has_text=re.compile(r"^slice ")).first
        image = viewer.locator(".widget-output img").first
        expect(caption).to_have_text(CAPTION, timeout=REDRAW)
        k, n, modality = CAPTION.match(caption.inner_text().strip()).groups()
        k, n = int(k), int(n)
        assert handle.get_attribute("aria-valuenow") in (str(k), f"{k}.0", f"{k}.00"), "slider and caption disagree"
        expect(image).to_have_attribute("src", re.compile(r"^data:image/png;base64,"), timeout=REDRAW)
        ran = time.perf_counter() - start

        handle.scroll_into_view_if_needed()
        # one step with the arrow key (left when the view starts on the last slice), then to the end
        for key, target in (("ArrowRight" if k < n - 1 else "ArrowLeft", k + 1 if k < n - 1 else k - 1),
                            ("End" if k != n - 1 else "Home", n - 1 if k != n - 1 else 0)):
            before = image.get_attribute("src")
            handle.focus()
            handle.press(key)
            expect(caption).to_have_text(f"slice {target} / {n} · {modality}", timeout=REDRAW)
            _wait_for_new_image(image, before, key)  # immediate: the viewer changes the caption after the image
        print(f"{NOTEBOOK}: ran to the slider in {ran:.1f} s; whole browser test {time.perf_counter() - start:.1f} s")
    except Exception:
        _report_failure(page, lab_tmp, tmp_path)
        raise


def _move_first_control(widget) -> str:
    """Move the widget's first control one step (slider) or to another entry (menu, toggle); returns what it did."""
    slider = widget.locator(".widget-slider [role=slider]")
    menu = widget.locator(".widget-dropdown select")
    first = widget.locator(".widget-hbox").first.locator(".widget-slider, .widget-dropdown, .widget-toggle-buttons").first
    kind = first.get_attribute("class") or ""
    if "widget-slider" in kind:
        handle = slider.first
        handle.scroll_into_view_if_needed()
        now, top = handle.get_attribute("aria-valuenow"), handle.get_attribute("aria-valuemax")
        handle.focus()
        key = "ArrowLeft" if now == top else "ArrowRight"
        handle.press(key)
        return f"slider {key}"
    if "widget-dropdown" in kind:
        select = menu.first
        select.scroll_into_view_if_needed()
        options = select.locator("option").all_inner_texts()
        current = select.evaluate("s => s.options[s.selectedIndex].text")
        target = next(o for o in options if o != current)
        select.select_option(label=target)
        return f"menu -> {target}"
    if "widget-toggle-buttons" in kind:
        button = widget.locator(".widget-toggle-buttons button:not(.mod-active)").first
        button.scroll_into_view_if_needed()
        button.click()
        return "toggle"
    raise AssertionError(f"the widget's first control is not a slider, menu or toggle: {kind!r}")


@pytest.mark.heavy
@pytest.mark.parametrize("notebook", sorted(WIDGETS))
def test_every_widget_of_the_notebook_redraws_in_a_real_browser(lab, page, tmp_path, notebook):
    from playwright.sync_api import expect

    base_url, token, lab_tmp = lab
    start = time.perf_counter()
    try:
        _open_and_run_all(page, base_url, token, f"{notebook}.ipynb")
        widgets = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .mmkd-widget")  # this notebook's only
        error = page.locator(".jp-OutputArea-output").filter(has_text="Traceback (most recent call last)").first
        deadline = time.perf_counter() + RUN_ALL / 1000
        while widgets.count() < WIDGETS[notebook]:
            if error.count() and error.is_visible():
                raise AssertionError(f"{notebook} raised before its widgets showed:\n{error.inner_text()[-3000:]}")
            if time.perf_counter() > deadline:
                raise AssertionError(f"{notebook}: {widgets.count()} of {WIDGETS[notebook]} widgets after {RUN_ALL} ms")
            time.sleep(0.5)
        _wait_for_kernel(base_url, token, timeout=RUN_ALL / 1000, notebook=f"{notebook}.ipynb")
        assert widgets.count() == WIDGETS[notebook], f"{notebook}: {widgets.count()} widgets, expected {WIDGETS[notebook]}"
        for index in range(WIDGETS[notebook]):
            widget = widgets.nth(index)
            caption = widget.locator(".mmkd-caption").first
            image = widget.locator(".widget-output img").first
            expect(image).to_have_attribute("src", re.compile(r"^data:image/png;base64,"), timeout=REDRAW)
            before_caption, before_image = caption.inner_text().strip(), image.get_attribute("src")
            action = _move_first_control(widget)
            expect(caption).not_to_have_text(before_caption, timeout=REDRAW)
            _wait_for_new_image(image, before_image, action)
            print(f"{notebook} widget {index}: {action}: {before_caption!r} -> {caption.inner_text().strip()!r}")
        print(f"{notebook}: {time.perf_counter() - start:.1f} s")
    except Exception:
        _report_failure(page, lab_tmp, tmp_path)
        raise
