"""What `omg deploy` and `omg run` do: the guard's phases on a board, from the workbench.

The workbench side holds the vendor (``$OMG_HOME/vendor`` by default) and
the TA signing key; the board holds the TEE. ``deploy_run`` seals a run's
int8 model, builds and signs the TA bundle (the vendor approves its
measurement), deploys both atomically, then runs preparation (attest →
license → provision) and one initialization to check. ``classify`` opens a
session, initializes (offline) and classifies clips played into the
board's secure microphone.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from omg_ta import commands as C

from ..errors import BoardError, ConfigError
from ..guard import Vendor
from ..kws.release import Release
from ..tee.bundle import build_bundle
from . import home as _home
from .connection import Board
from .deployment import _agent, deploy
from .emulator import manufacturer
from .remote import RemoteEnclave


def default_vendor() -> Vendor:
    p = _home.home() / "vendor"
    v = Vendor(p) if (p / "vendor.json").is_file() else Vendor.create(p)
    v.trust_manufacturer(manufacturer().root_der)  # the emulated boards' manufacturer
    return v


def ta_bundle(vendor: Vendor, *, optee: bool = False) -> Path:
    """The TA for this vendor, signed, its measurement approved by the vendor.

    The emulated TEE's TA is the Python bundle; OP-TEE's is the C TA, built
    with the board image's TA dev kit and signed with the key OP-TEE boards
    trust (``omgkit.board.optee_ta``)."""
    if not optee:
        out = _home.home() / "bundle"
        m = build_bundle(out, vendor.public_raw, _home.ta_signing_key())
    else:
        from . import optee_image, optee_ta

        out = _home.home() / "bundle-optee"
        img = optee_image.build_image()
        _, m = optee_ta.build(out, vendor.public_raw, dev_kit=img["ta_dev_kit"],
                              sign_key=_home.ta_signing_key_optee())  # fmt: skip
    vendor.approve(m)
    return out


def init_remote_device(url: str) -> str:
    """Give an SSH board the emulated TEE's device state (for boards without OP-TEE)."""
    from ..tee import Device

    with tempfile.TemporaryDirectory() as tmp, Board(url) as b:
        dev = Device.create(
            Path(tmp) / "device", manufacturer(), [_home.ta_signing_key().public_key()]
        )
        dirs = " ".join(
            sorted(
                {
                    p.relative_to(dev.path.parent).as_posix()
                    for p in dev.path.rglob("*")
                    if p.is_dir()
                }
            )
        )
        # the secret directory is closed (0700) before any secret goes in
        b.run(
            f"umask 077 && mkdir -p device {dirs} deploy/releases normal && chmod 700 device/secure"
        )
        sftp = b.sftp
        for p in sorted(dev.path.rglob("*")):
            rel = p.relative_to(dev.path.parent).as_posix()
            target = b.sftp_path(rel)
            if p.is_file():
                sftp.put(str(p), target)
                sftp.chmod(target, 0o600)
        return dev.device_id.hex()


RUNTIME_PREFERENCE = ("litert", "tflite-runtime", "tflm", "c")
"""The runtime a package is sealed for when the release's own is not on the board."""


def board_release(b: Board, release: Release) -> tuple[Release, bool]:
    """``release`` for the runtime the board's TEE has, and whether it is an OP-TEE board.

    The board says (``device-info``): OP-TEE's TA runs the C engine; an
    emulated TEE runs what its environment has installed (``litert`` on
    most, ``tflite-runtime`` on a board made with ``--runtime
    tflite-runtime``). The package header names the runtime, so the
    vendor seals for one the board has."""
    info = _agent(b, "device-info")
    optee = str(info.get("tee", "")).startswith("OP-TEE")
    have = info.get("runtimes") or (["c"] if optee else [release.runtime])
    if release.runtime in have:
        return release, optee
    pick = next((r for r in RUNTIME_PREFERENCE if r in have), None)
    if pick is None:
        raise ConfigError(f"the board's TEE has no runtime this workbench seals for "
                          f"(it has: {', '.join(have) or 'none'})")  # fmt: skip
    return release.with_runtime(pick), optee


def deploy_run(url: str, run_dir: str | os.PathLike | Release, *, model_version: int | None = None,
               kem: str = "X25519", vendor: Vendor | None = None) -> dict:  # fmt: skip
    """Seal a run's release (checked first: a bad model never reaches the board), deploy, provision."""
    release = run_dir if isinstance(run_dir, Release) else Release.from_run(run_dir)
    release.check()  # a model that would not run in a TA stops here, before any board is touched
    v = vendor or default_vendor()
    with Board(url) as b:
        tee = _agent(b, "tee-up")
        if not tee.get("ok"):
            raise BoardError(tee.get("message", "the board's TEE did not start"))
        release, optee = board_release(b, release)
        if optee:  # OP-TEE's key transport is X25519 only
            if kem != "X25519":
                raise ConfigError(f"OP-TEE's TA unwraps X25519 licenses only, not {kem}")
            from .optee_qemu import sync_code

            sync_code(b)  # the board side runs this workbench's code (a look-up when unchanged)
        if (
            model_version is None
        ):  # the same release keeps its version; a new model gets the next one
            model_version = v.version_for(release)
        pkg = v.seal_model(release, model_version=model_version)
        bundle = ta_bundle(v, optee=optee)
        report = deploy(b, bundle, pkg)
        t = time.perf_counter()
        with RemoteEnclave(b) as r:
            r.prepare(v, model_id=release.model_id, model_version=model_version, kem=kem)
            prep = time.perf_counter() - t
            info = r.initialize()
    return {"release": report.release, "sent": report.sent, "linked": report.linked, "skipped": report.skipped,
            "deploy_seconds": report.seconds, "preparation_seconds": prep, "model": info}  # fmt: skip


def classify(
    url: str, audio: np.ndarray, *, batch: int = 256, mic: bool = True
) -> tuple[list[int], dict]:
    """Labels for int16 clips on a deployed board; also timings and the model's info.

    ``info["model"]["labels"]`` names the classes, as the TA's package does.
    """
    a = np.asarray(audio, dtype="<i2").reshape(-1, C.CLIP_SAMPLES)
    labels: list[int] = []
    with Board(url) as b, RemoteEnclave(b) as r:
        t = time.perf_counter()
        model = r.initialize()
        init = time.perf_counter() - t
        info = r.call("info")
        mic = mic and bool(
            info.get("mic")
        )  # QEMU has no secure microphone: audio goes in as a batch
        t = time.perf_counter()
        for i in range(0, len(a), batch):
            chunk = a[i : i + batch]
            labels += r.classify_mic(chunk) if mic else r.classify_batch(chunk)
        op = time.perf_counter() - t
        rtt = sorted(r.ping() for _ in range(20))[10]
    return labels, {
        "model": model,
        "tee": info.get("tee"),
        "source": "secure microphone" if mic else "shared memory (evaluation mode)",
        "initialization_seconds": init,
        "operation_seconds": op,
        "rtt_median_ms": rtt * 1000,
    }


def plain_labels(
    model_info: dict, audio: np.ndarray, vendor: Vendor | None = None
) -> list[int] | None:
    """Plain inference of the model a board runs, on the same clips: the vendor's own copy.

    The workbench is the vendor too: it opens the package it sealed for
    ``model_info`` (model id and version, as the board's TA reported them)
    with the model key it kept, and runs the model outside any TEE with the
    package's frontend and runtime. None if this vendor did not seal it.
    """
    from omg_ta.frontend import Frontend, FrontendSettings
    from omg_ta.package import open_package
    from omg_ta.runtime import load_runtime

    v = vendor or default_vendor()
    mid, ver = str(model_info["model_id"]), int(model_info["model_version"])
    pkg = v._model_key_path(mid, ver).with_suffix(".omgpkg")
    if not pkg.is_file():
        return None
    header, model = open_package(pkg.read_bytes(), v._model_key(mid, ver).reveal(), v.public_key())
    fe = Frontend(FrontendSettings.from_dict(dict(header.input["frontend"])))
    rt = load_runtime(header.runtime, model)
    a = np.asarray(audio, dtype="<i2").reshape(-1, C.CLIP_SAMPLES)
    return [
        int(x) for i in range(0, len(a), 256) for x in rt.classify(fe(a[i : i + 256])[..., None])
    ]
