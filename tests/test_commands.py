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


def test_result_codes_are_distinct():
    from omg_ta.errors import BY_RESULT_CODE, SECURITY_ERRORS

    assert len(BY_RESULT_CODE) == len(SECURITY_ERRORS)
