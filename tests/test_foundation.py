"""The project's own set-up: pins agree, the README's two commands, CI."""

from __future__ import annotations

import re
import tomllib

from conftest import REPO


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _pins(path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line)
        assert m, f"{path.name}: not an exact pin: {line!r}"
        out[_norm(m.group(1))] = m.group(2)
    return out


def _conda_pip_pins() -> dict[str, str]:
    text = (REPO / "environment.yml").read_text()
    block = text.split("- pip:", 1)[1]
    out = {}
    for line in block.splitlines():
        m = re.match(r"\s+-\s+([A-Za-z0-9_.\-]+)==(\S+)", line)
        if m:
            out[_norm(m.group(1))] = m.group(2)
    return out


def test_environment_yml_pins_equal_requirements():
    req = {**_pins(REPO / "requirements/board.txt"), **_pins(REPO / "requirements/workbench.txt")}
    assert _conda_pip_pins() == req


def test_constraints_agree_with_requirements():
    cons = _pins(REPO / "requirements/constraints.txt")
    req = {**_pins(REPO / "requirements/board.txt"), **_pins(REPO / "requirements/workbench.txt")}
    for name, ver in req.items():
        assert cons.get(name) == ver, (
            f"{name}: requirements pin {ver}, constraints {cons.get(name)}"
        )


def test_board_requirements_stay_light():
    files = sorted((REPO / "requirements").glob("board*.txt"))
    assert [f.name for f in files] == ["board-tflite-runtime.txt", "board.txt"]
    for f in files:
        board = _pins(f)
        assert board and not any(
            n.startswith(("tensorflow", "keras", "jax", "torch")) for n in board
        )
    # tflite-runtime's environment: its own numpy (< 2), the rest as the default board's
    tfl, default = _pins(files[0]), _pins(files[1])
    assert tfl["tflite-runtime"] == "2.14.0" and tfl["numpy"].startswith("1.")
    assert {k: v for k, v in tfl.items() if k not in ("numpy", "tflite-runtime")} == {
        k: default[k] for k in ("cbor2", "cryptography")
    }


def test_python_version_pinned_everywhere():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["requires-python"] == ">=3.11,<3.12"
    assert "python=3.11" in (REPO / "environment.yml").read_text()
    assert pyproject["project"]["scripts"]["omg"] == "omgkit.cli:main"


def test_readme_opens_with_the_two_commands():
    head = (REPO / "README.md").read_text().split("\n## ", 1)[0]
    assert "make demo" in head and "make test" in head


def test_ci_runs_make_test():
    assert "make test" in (REPO / ".ci/run").read_text()


def test_public_api_resolves_and_import_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, omgkit\n"
        "assert 'tensorflow' not in sys.modules\n"
        "missing = [n for n in omgkit.__all__ if not hasattr(omgkit, n)]\n"
        "print(missing)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
