"""The one error path: (result code, message) out of one side, the same error class on the other."""

from __future__ import annotations

import pickle

import pytest

import omgkit.errors as oe
from omg_ta import commands as C
from omg_ta import errors as E
from omgkit.tee import wire


def _declared():
    import omgkit.tee.client  # noqa: F401 - TeeUnavailableError joins the hierarchy

    return [c for c in E._classes() if "result_code" in vars(c) and c is not E.OmgError]


@pytest.mark.parametrize("cls", _declared(), ids=lambda c: c.__name__)
def test_every_class_crosses_as_itself(cls):
    e = cls.__new__(cls)
    E.OmgError.__init__(e, "file x is missing: run y first")
    code, message = E.to_result(e)
    assert code == cls.result_code
    back = E.from_result(code, message)
    assert type(back) is cls
    if issubclass(cls, E.SecurityError):
        # terse: the class's fixed text, whatever the sender said
        assert message == cls.default_message and str(back) == cls.default_message
    else:
        assert str(back) == "file x is missing: run y first"  # operational: kept, once


def test_security_detail_never_crosses():
    e = E.UnsealError("key for measurement 1234 did not open: tag mismatch at byte 7")
    assert E.to_result(e) == (C.RESULT_UNSEAL, E.UnsealError.default_message)
    assert str(E.from_result(C.RESULT_UNSEAL, "tag mismatch at byte 7")) == (
        E.UnsealError.default_message
    )


def test_foreign_exceptions_are_internal_errors_without_detail():
    code, message = E.to_result(KeyError("/secret/path/huk.bin"))
    assert code == C.RESULT_GENERIC and "huk" not in message
    back = E.from_result(code, message)
    assert isinstance(back, E.TeeError) and "(result 0xffff0000)" in str(back)


def test_unknown_codes_keep_code_and_message_once():
    e = E.from_result(0x80009999, "a newer TA's error")
    assert isinstance(e, E.TeeError) and e.code == 0x80009999
    assert str(e) == "a newer TA's error (result 0x80009999)"
    # crossing again (a board agent relays it) does not append the code twice
    assert str(E.from_result(*E.to_result(e))) == str(e)


def test_structured_classes_rebuild_from_their_message():
    e = E.RuntimeUnavailableError("tflm", "tflite-micro", "No module named tflite_micro")
    back = E.from_result(*E.to_result(e))
    assert isinstance(back, E.RuntimeUnavailableError) and str(back) == str(e)
    board = oe.BoardUnreachableError("127.0.0.1", 2222, "Connection refused", "demo")
    assert str(board).count("unreachable") == 1 and "`omg board up demo`" in str(board)


def test_wire_replies_and_a_ta_copy_of_the_classes():
    """The TEE daemon meets a TA's own copy of omg_ta.errors: matched by code, not by class."""
    import importlib.util
    import sys

    from conftest import REPO

    spec = importlib.util.spec_from_file_location(
        "_ta_copy.errors", REPO / "ta/omg_ta/errors.py", submodule_search_locations=None
    )
    pkg = importlib.util.module_from_spec(importlib.util.spec_from_loader("_ta_copy", loader=None))
    pkg.__path__ = [str(REPO / "ta/omg_ta")]
    sys.modules["_ta_copy"] = pkg
    try:
        copy = importlib.util.module_from_spec(spec)
        sys.modules["_ta_copy.errors"] = copy
        spec.loader.exec_module(copy)
        assert copy.ModelFormatError is not E.ModelFormatError
        reply = wire.error_reply(copy.ModelFormatError("the model has 10 outputs but 12 labels"))
        assert reply == {"ok": False, "code": C.RESULT_MODEL_FORMAT,
                         "message": "the model has 10 outputs but 12 labels"}  # fmt: skip
        with pytest.raises(E.ModelFormatError, match="10 outputs but 12 labels"):
            wire.raise_for(reply)
        with pytest.raises(E.RollbackError) as r:
            wire.raise_for(wire.error_reply(copy.RollbackError("counter at 7")))
        assert "7" not in str(r.value)
    finally:
        for m in ("_ta_copy", "_ta_copy.errors", "_ta_copy.commands"):
            sys.modules.pop(m, None)


def test_key_material_has_no_useful_repr_and_does_not_pickle(tmp_path):
    import copy

    from omg_ta.secret import Secret

    k = Secret(bytes(range(32)))
    assert repr(k) == "<Secret: 32 bytes>" and str(k) == repr(k) and "1f" not in repr(k)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(k)
    with pytest.raises(TypeError):
        copy.copy(k)
    assert k == Secret(bytes(range(32))) and k != Secret(bytes(32)) and k.reveal()[31] == 31
    from omgkit.tee import Device, Manufacturer

    dev = Device.create(tmp_path / "d", Manufacturer.create(tmp_path / "m"), [])
    assert isinstance(dev.huk(), Secret) and len(dev.huk()) == 32


def test_secret_files_are_0600_from_the_first_byte(tmp_path, monkeypatch):
    """Key files never exist with a wider mode, not even between write and chmod."""
    import os
    import stat

    from omgkit import util
    from omgkit.guard import Vendor
    from omgkit.tee import Device, Manufacturer

    seen: list[tuple[str, int]] = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((os.path.basename(dst), stat.S_IMODE(os.stat(src).st_mode)))
        return real_replace(src, dst)

    monkeypatch.setattr(util.os, "replace", spy)
    os.umask(0o022)
    v = Vendor.create(tmp_path / "v")
    m = Manufacturer.create(tmp_path / "m")
    Device.create(tmp_path / "d", m, [])
    modes = dict(seen)
    for name in ("vendor_key.pem", "root_key.pem", "huk.bin", "attest_key.pem"):
        assert modes[name] == 0o600, (name, oct(modes[name]))
    assert modes["vendor.json"] == 0o644  # ordinary files keep the usual mode
    for f in (v.path / "vendor_key.pem", tmp_path / "d" / "secure" / "huk.bin"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
