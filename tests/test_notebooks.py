"""The notebooks: committed clean and thin, and every one runs top to bottom headless.

They run in order (01 trains what 02-06 use) on the tiny profile, with the
real parts behind them: TTS engines, TensorFlow, both runtimes, the
emulated TEE, an emulated board over SSH.
"""

from __future__ import annotations

import ast
import json
import os

import nbformat
import pytest
from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ORDER = ["01_data_and_training", "02_convert_and_quantize", "03_encrypt_and_provision",
         "04_enclave_walkthrough", "05_overhead_and_accuracy", "06_attacks"]  # fmt: skip


def test_all_six_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == ORDER


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_clean_and_thin(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and "parameters" in code[0].metadata.get("tags", []), "first code cell: parameters"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for c in code:
        assert c.outputs == [] and c.execution_count is None, f"{path.name}: committed with outputs"
        for node in ast.walk(ast.parse(c.source)):
            assert not isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
            ), f"{path.name}: defines {type(node).__name__}; put it in omgkit (omgkit.show) instead"


@pytest.fixture(scope="module")
def executed(tiny_corpus, tmp_path_factory):
    """Run 01-06 in order with papermill; return {name: executed notebook}.

    The kernels get an OMG_HOME of their own (boards, keys, vendor), so what
    the notebooks seal and deploy cannot collide with the other tests' vendor.
    """
    import papermill as pm

    from omgkit.board import emulator

    art = tmp_path_factory.mktemp("nb-artifacts")
    out_dir = tmp_path_factory.mktemp("nb-out")
    common = {"ARTIFACTS": str(art)}
    params = {
        "01_data_and_training": {"PROFILE": "tiny", "EPOCHS": 3, "AUGMENT_COPIES": 1, "DEMO": None},
        "03_encrypt_and_provision": {"BOARD": "emu://nbtest"},
        "04_enclave_walkthrough": {"BOARD": "emu://nbtest"},  # 03 stopped it: 04 brings it up
        "05_overhead_and_accuracy": {"N": 3, "REPEATS": 2},
    }
    old_home = os.environ.get("OMG_HOME")
    os.environ["OMG_HOME"] = str(tmp_path_factory.mktemp("nb-omghome"))
    done = {}
    try:
        for name in ORDER:
            out = out_dir / f"{name}.ipynb"
            pm.execute_notebook(str(REPO / "notebooks" / f"{name}.ipynb"), str(out),
                                parameters={**common, **params.get(name, {})}, kernel_name="python3",
                                cwd=str(REPO / "notebooks"), progress_bar=False, execution_timeout=900)  # fmt: skip
            done[name] = nbformat.read(out, as_version=4)
    finally:
        for st in emulator.list_boards():
            emulator.down(st["name"])
        if old_home is None:
            os.environ.pop("OMG_HOME", None)
        else:
            os.environ["OMG_HOME"] = old_home
    return done


def _text(nb) -> str:
    parts = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            parts.append(o.get("text", ""))
            data = o.get("data", {})
            parts += [str(data.get(k, "")) for k in ("text/plain", "text/markdown", "text/html")]
    return "\n".join(parts)


@pytest.mark.slow
def test_notebooks_run_top_to_bottom(executed):
    for name, nb in executed.items():
        errors = [
            o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"
        ]
        assert not errors, f"{name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"


@pytest.mark.slow
def test_notebooks_show_what_they_promise(executed):
    images = {n: sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
              for n, nb in executed.items()}  # fmt: skip
    assert images["01_data_and_training"] >= 2  # clips and features, learning curves
    assert "<audio" in _text(executed["01_data_and_training"])  # audio players
    assert images["02_convert_and_quantize"] >= 2  # confusion matrices, accuracy by condition
    assert "int8 labels equal" in _text(executed["02_convert_and_quantize"])
    assert "labels unchanged under ±1 LSB" in _text(executed["02_convert_and_quantize"])
    t3 = _text(executed["03_encrypt_and_provision"])
    assert (
        "TA measurement" in t3
        and "wrapped model key" in t3
        and images["03_encrypt_and_provision"] >= 1
    )
    # the board's cell shows the board (inside an `if`), and the notebook stops it at the end
    assert "**emulated board**" in t3 and "**emulated board, stopped**" in t3
    t4 = _text(executed["04_enclave_walkthrough"])
    assert "RollbackError" in t4 and "model decrypted in the TA" in t4
    assert "the board emu://nbtest" in t4  # the walkthrough ran on the board
    assert "paper (Bayerl et al. 2020)" in _text(executed["05_overhead_and_accuracy"])
    assert images["05_overhead_and_accuracy"] >= 2
    assert "10/10 attacks blocked" in _text(executed["06_attacks"])


@pytest.mark.slow
def test_notebook_outputs_hold_no_model_bytes(executed):
    """The plaintext model is the vendor's: shown as a histogram, never dumped into outputs."""
    text = json.dumps([nbformat.writes(nb) for nb in executed.values()])
    assert "TFL3" not in text  # the flatbuffer identifier of a .tflite model


@pytest.mark.slow
def test_make_lab_serves_the_notebooks_with_a_python3_kernel(tmp_path):
    """`make lab` starts JupyterLab on notebooks/; its python3 kernel is this environment's."""
    import signal
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = f"--port={port} --ip=127.0.0.1 --IdentityProvider.token=omgtest"
    proc = subprocess.Popen(["make", "-s", "-C", str(REPO), "lab", f"LAB_ARGS={args}", f"ART={tmp_path}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/contents?token=omgtest", timeout=5) as r:
                    contents = json.load(r)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-2000:]
                assert time.monotonic() < deadline, "JupyterLab did not answer within 120 s"
                time.sleep(0.5)
        names = {c["name"] for c in contents["content"]}
        assert {f"{n}.ipynb" for n in ORDER} <= names
        with urllib.request.urlopen(f"{base}/kernelspecs?token=omgtest", timeout=5) as r:
            specs = json.load(r)
        assert specs["default"] == "python3" and "python3" in specs["kernelspecs"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


def test_the_lab_saves_notebooks_without_outputs(tmp_path):
    """A real Jupyter server with `make lab`'s pre-save hook: a notebook saved with outputs,
    widget state and counts (as JupyterLab's autosave writes one) lands on disk clean."""
    import re
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    recipe = (REPO / "Makefile").read_text().split("\nlab:", 1)[1]
    hook = re.search(r"--FileContentsManager\.pre_save_hook=(\S+)", recipe)
    assert hook and hook.group(1) == "omgkit.lab.scrub_outputs"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = str(Path(sys.executable).with_name("jupyter"))
    srv = subprocess.Popen([exe, "server", f"--ServerApp.root_dir={tmp_path}", f"--ServerApp.port={port}",
                            "--ServerApp.token=t", "--ServerApp.open_browser=False", "--allow-root",
                            f"--FileContentsManager.pre_save_hook={hook.group(1)}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        nb = nbformat.v4.new_notebook()
        nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
        cell = nbformat.v4.new_code_cell("print('secret')", execution_count=3)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="secret\n")]
        cell.metadata["execution"] = {"iopub.status.idle": "2026-12-02T00:00:00Z"}
        nb.cells = [cell, nbformat.v4.new_markdown_cell("# title")]
        body = json.dumps({"type": "notebook", "format": "json", "content": nb}).encode()
        deadline = time.monotonic() + 60
        while True:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/api/contents/x.ipynb?token=t",
                                             data=body, method="PUT",
                                             headers={"Content-Type": "application/json"})  # fmt: skip
                urllib.request.urlopen(req, timeout=10).read()
                break
            except OSError:
                if time.monotonic() > deadline or srv.poll() is not None:
                    raise AssertionError(f"no Jupyter server: {srv.stderr.read1(4000)!r}") from None
                time.sleep(0.3)
    finally:
        srv.terminate()
        srv.wait(20)
    saved = nbformat.read(tmp_path / "x.ipynb", as_version=4)
    c = saved.cells[0]
    assert c.source == "print('secret')" and c.outputs == [] and c.execution_count is None
    assert "widgets" not in saved.metadata and "execution" not in c.metadata
    assert saved.cells[1].source == "# title"
