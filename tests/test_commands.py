"""The host/TA contract: one module, documented, and the docs agree with it."""

from __future__ import annotations

import ast

from conftest import REPO

from omg_ta import commands as C


def test_every_command_is_documented_with_its_parameters():
    src = (REPO / "ta/omg_ta/commands.py").read_text()
    body = ast.parse(src).body
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if (
                name.startswith("CMD_")
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
            ):
                docs[name] = nxt.value.value
    names = {f"CMD_{k.upper()}" for k in C.COMMANDS}
    assert set(docs) == names
    for name, doc in docs.items():
        assert "p0" in doc or "All parameters NONE" in doc, name


def test_signatures_cover_every_command_and_ids_are_unique():
    assert set(C.SIGNATURES) == set(C.COMMANDS.values())
    assert len(set(C.COMMANDS.values())) == len(C.COMMANDS)
    assert C.param_type(C.SIGNATURES[C.CMD_INITIALIZE], 3) == C.MEMREF_OUTPUT


def test_protocol_doc_lists_every_command_with_its_id():
    doc = (REPO / "docs/protocol.md").read_text()
    for name, cmd in C.COMMANDS.items():
        assert f"| {cmd} | `CMD_{name.upper()}` |" in doc


def test_every_error_class_code_is_a_contract_code_and_distinct():
    """One class per code (the workbench's classes too), every code from the contract."""
    import omgkit.errors  # noqa: F401 - its classes join the hierarchy
    import omgkit.tee.client  # noqa: F401
    from omg_ta.errors import OmgError, _classes

    declared = [c for c in _classes() if "result_code" in vars(c)]
    codes = [c.result_code for c in declared]
    assert len(codes) == len(set(codes)), sorted(codes)
    contract = set(C.RESULT_CODES.values())
    assert set(codes) <= contract
    assert OmgError.result_code == C.RESULT_GENERIC
    names = {c.__name__ for c in declared}
    assert {"ModelFormatError", "RuntimeUnavailableError", "ConfigError", "ArtifactError",
            "TeeUnavailableError", "TANotFoundError", "BadParametersError"} <= names  # fmt: skip


def _literals(paths, values):
    """Integer literals of ``values`` in the Python sources under ``paths``: (file, line, value)."""
    found = []
    for root in paths:
        for f in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text())):
                if (
                    isinstance(node, ast.Constant)
                    and type(node.value) is int
                    and node.value in values
                ):
                    found.append((str(f.relative_to(REPO)), node.lineno, node.value))
    return found


def test_no_clip_size_or_result_code_literals_outside_the_contract():
    """The contract is the one home of the clip size and the result codes: everything imports it."""
    sizes = {C.CLIP_SAMPLES, C.CLIP_BYTES}
    codes = set(C.RESULT_CODES.values()) - {0}
    found = [x for x in _literals(["omgkit", "ta/omg_ta"], sizes | codes)
             if x[0] != "ta/omg_ta/commands.py"]  # fmt: skip
    assert found == []


def test_clip_format_is_derived_not_retyped():
    assert C.CLIP_BYTES == C.CLIP_SAMPLES * C.SAMPLE_BYTES
    assert C.SHARED_WINDOW_CLIPS <= C.MAX_BATCH
    from omg_ta.frontend import FrontendSettings

    assert FrontendSettings().sample_rate == C.SAMPLE_RATE
    assert FrontendSettings().clip_samples == C.CLIP_SAMPLES


def test_protocol_doc_lists_every_result_code():
    doc = (REPO / "docs/protocol.md").read_text()
    for name, code in C.RESULT_CODES.items():
        assert f"| `{code:#010x}` | `{name}` |" in doc, name
