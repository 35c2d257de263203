"""Notebook 04 in a real browser: JupyterLab, Debian's Chromium driven by Playwright, a fake microphone.

What a teacher does, on an emulated board over SSH: open the notebook, Run
All, click the three phases' steps, stage an attack, record a second from
the microphone (Chromium plays a WAV of the corpus as its capture device),
and see the TA's label and the two-worlds picture. Screenshots are kept in
``artifacts/test-output/browser/`` (or ``$OMG_TEST_OUTPUT/browser``).

Chromium comes from Debian (``tools/sysdeps.py browser``, run by ``make
test``); ``playwright install`` would download a browser, which this
project does not: Playwright is given Debian's executable.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("OMG_TEST_OUTPUT", REPO / "artifacts" / "test-output")) / "browser"
BOARD = "browser"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tiny_run, board_home, tmp_path_factory):
    """JupyterLab on a folder holding notebook 04 with its parameters set (tiny run, emulated board)."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from omgkit.board import emulator

    assert Path(CHROMIUM).is_file(), (
        f"{CHROMIUM} not found: `python3 tools/sysdeps.py browser` installs Debian's chromium "
        "(make test runs it)"
    )
    emulator.create(BOARD)
    root = tmp_path_factory.mktemp("lab")
    art = root / "artifacts"
    art.mkdir()
    (art / "run").symlink_to(tiny_run)
    nb = load_notebook_node(str(REPO / "notebooks" / "04_enclave_walkthrough.ipynb"))
    nb = parameterize_notebook(nb, {"ARTIFACTS": str(art), "BOARD": f"emu://{BOARD}"})
    nbformat.write(nb, root / "04.ipynb")
    settings = root / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port, token = _free_port(), "omgkit-browser-test"
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(root / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(root / "workspaces"))  # fmt: skip
    log = open(root / "lab.log", "wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser", f"--port={port}",
         "--ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--allow-root", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.expose_app_in_browser=True"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, (root / "lab.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "JupyterLab did not start in 90 s"
                time.sleep(0.5)
        yield {"url": url, "token": token, "root": root}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_notebook_04_in_chromium_with_a_microphone(lab, tiny_run):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    from omgkit.guard.demo import GOLDEN

    wav = GOLDEN / "yes.wav"  # the fake microphone plays "yes" (16 kHz mono PCM), over and over
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required",
        ])  # fmt: skip
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        page.set_default_timeout(120_000)  # no Playwright call waits for ever
        try:
            page.goto(f"{lab['url']}/lab/tree/04.ipynb?token={lab['token']}")
            # JupyterLab may ask which kernel to start (a fresh settings directory): the notebook's own
            dialog = page.locator(".jp-Dialog").get_by_role("button", name="Select", exact=True)
            try:
                dialog.wait_for(timeout=20_000)
                dialog.click()
            except PlaywrightTimeout:
                pass
            kernel = "window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel"
            page.wait_for_function(f"{kernel}?.status === 'idle'", timeout=90_000)
            # Run ▸ Run All (not awaited: the command's promise settles only when every cell ran)
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            load = page.get_by_role("button", name="1 · load TA")
            expect(load).to_be_visible(timeout=240_000)
            page.wait_for_function(  # every cell ran: none waits or runs
                "document.querySelectorAll('.jp-InputArea-prompt').length > 0 && "
                "![...document.querySelectorAll('.jp-InputArea-prompt')].some(p => p.textContent.includes('*'))",
                timeout=240_000,
            )
            widget = page.locator(".jp-OutputArea-output").filter(has=load)
            widget.scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / "01-after-run-all.png"))
            # the headless part ran on the board: its output names it
            expect(page.get_by_text("the board emu://browser").first).to_be_visible()

            for title in ("1 · load TA", "2 · attest", "3 · provision", "4 · initialize"):
                widget.get_by_role("button", name=title).click()
                expect(widget.get_by_text(f"✔ {title}").first).to_be_visible(timeout=60_000)
            picture = widget.locator("svg#omg-two-worlds")
            expect(
                picture.locator("g[data-item='decrypted-model'][data-zone='secure']")
            ).to_have_count(1)
            expect(
                picture.locator("g[data-item='decrypted-model'][data-zone='normal']")
            ).to_have_count(0)
            widget.screenshot(path=str(SHOTS / "02-initialized.png"))

            widget.get_by_role("button", name="● record 1 s").click()
            mic = widget.locator(".omg-mic-status")
            expect(mic).to_contain_text("the TA says:", timeout=60_000)
            label = mic.inner_text().split("the TA says:")[1].strip()
            from omgkit.kws.release import Release

            assert label in Release.from_run(tiny_run).labels, label
            expect(picture.locator(f"text=label: {label}").first).to_be_visible()
            expect(widget.locator("img.widget-image")).to_be_visible()  # waveform + spectrogram
            widget.screenshot(path=str(SHOTS / "03-microphone.png"))

            widget.get_by_role("checkbox", name="replay the old model").check()
            widget.get_by_role("button", name="4 · initialize").click()
            expect(widget.get_by_text("✘ RollbackError").first).to_be_visible(timeout=60_000)
            refused = picture.locator("g#refused")
            expect(refused).to_have_attribute("data-error", "RollbackError")
            expect(refused).to_have_attribute("data-zone", "secure")
            widget.screenshot(path=str(SHOTS / "04-replay-refused.png"))
        except BaseException:
            page.screenshot(path=str(SHOTS / "failed.png"), full_page=True)
            raise
        finally:
            browser.close()
