"""`omg guard demo`: the three phases on a local emulated TEE, step by step.

Sets up every party in a work directory (manufacturer, TA signing key,
vendor, one emulated device with its TEE daemon), then runs preparation
against the vendor's HTTP service, stops the service, and runs
initialization and operation offline. Each step's outcome and time is
reported; the same function backs the notebooks.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from omg_ta.frontend import Frontend
from omg_ta.runtime import load_runtime

from ..errors import ConfigError
from ..kws.audio import read_clip
from ..kws.release import Release
from ..kws.run import RunDir
from ..tee import Device, mic_feed
from .host import GuardedModel
from .local import LocalGuard
from .vendor import VendorClient, VendorServer

GOLDEN = Path(__file__).resolve().parents[2] / "data" / "golden"


@dataclasses.dataclass
class Step:
    phase: str
    name: str
    seconds: float
    outcome: str


def run_demo(run_dir: str | os.PathLike, workdir: str | os.PathLike | None = None, *, kem: str = "X25519",
             say: Callable[[Step], None] = lambda s: None) -> list[Step]:  # fmt: skip
    """Run preparation, initialization and operation; return the steps.

    The run's release is checked before any party is set up: a model that
    would not run in the TA stops here, with what is wrong.
    """
    man = RunDir(run_dir).manifest()
    release = Release.from_run(run_dir)
    release.check()
    model, frontend, labels = release.model, release.frontend, release.labels
    root = Path(workdir or tempfile.mkdtemp(prefix="omg-guard-demo-"))
    if root.is_dir() and any(root.iterdir()):
        if not (root / ".omg-guard-demo").is_file():
            raise ConfigError(
                f"{root} is not empty and not an earlier guard demo; choose another --workdir"
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / ".omg-guard-demo").write_text("made by omg guard demo; removed by the next one\n")
    steps: list[Step] = []

    def step(phase: str, name: str, fn):
        t = time.perf_counter()
        outcome = fn()
        s = Step(phase, name, time.perf_counter() - t, outcome)
        steps.append(s)
        say(s)

    ctx: dict = {}

    def setup():
        ctx["lg"] = lg = LocalGuard.create(root)
        ctx["vendor"] = lg.vendor
        return (f"manufacturer, TA signer and vendor in {root}; TA bundle signed, measurement "
                f"{lg.measurement.hex()[:16]}…, approved by the vendor")  # fmt: skip

    def device():
        ctx["device"] = Device(ctx["lg"].device("device"))
        return f"device {ctx['device'].device_id.hex()}: TA installed, TEE daemon started"

    def seal():
        ctx["pkg"] = ctx["vendor"].seal_model(release, model_version=1)
        return (
            f"model ({len(model)} bytes) checked and sealed into a {len(ctx['pkg'])}-byte package"
        )

    step("setup", "parties", setup)
    step("setup", "device", device)
    step("setup", "seal model", seal)
    try:
        g = GuardedModel(ctx["device"].path, root / "normal-world")
        srv = VendorServer(ctx["vendor"]).start()
        vc = VendorClient(srv.url)

        def attest():
            ctx["token"] = g.attest(vc.new_nonce())
            return f"attestation token, {len(ctx['token'])} bytes (COSE_Sign1, chain to the manufacturer)"

        def license_():
            ctx["license"] = vc.issue_license(
                ctx["token"], model_id=release.model_id, model_version=1, kem=kem
            )
            return f"license issued by the vendor ({kem}), {len(ctx['license'])} bytes"

        def provision():
            sealed = g.provision(ctx["license"])
            g.install_package(ctx["pkg"])
            return f"model key unwrapped and sealed to this TA on this device ({len(sealed)} bytes)"

        step("preparation", "attest", attest)
        step("preparation", "license", license_)
        step("preparation", "provision", provision)
        srv.stop()
        g.close()
        step(
            "preparation",
            "vendor offline",
            lambda: "vendor service stopped: everything below is offline",
        )

        g = GuardedModel(ctx["device"].path, root / "normal-world")

        def init():
            info = g.initialize()
            return (f"TA loaded and measured again ({g.timings['ta_load'] * 1000:.1f} ms), key unsealed, "
                    f"license checked, model v{info['model_version']} decrypted inside the TA")  # fmt: skip

        step("initialization", "initialize", init)
        clips = np.stack([read_clip(GOLDEN / f"{w}.wav") for w in ("yes", "no", "silence")])

        def op():
            mic_feed(ctx["device"].path, clips)
            r = g.classify_mic(len(clips))
            plain = load_runtime(release.runtime, model).classify(
                Frontend(frontend)(clips)[..., None]
            )
            same = (
                "same as plain inference"
                if r.labels == plain.tolist()
                else "DIFFERENT from plain inference"
            )
            return (
                f"secure microphone heard yes/no/silence → {[labels[i] for i in r.labels]} ({same})"
            )

        step("operation", "classify", op)

        data = man.data_path
        if data.is_dir():

            def split():
                from ..kws.dataset import load_dataset

                ds = load_dataset(data)
                x, _ = ds.load(ds.evaluation_items("testing", man.holdout_engine))
                t = time.perf_counter()
                guarded = g.classify_batch(x).labels
                dt = time.perf_counter() - t
                plain = (
                    load_runtime(release.runtime, model)
                    .classify(Frontend(frontend)(x)[..., None])
                    .tolist()
                )
                same = sum(a == b for a, b in zip(guarded, plain, strict=True))
                return (f"test split through shared memory: guarded labels equal plain on {same}/{len(x)} clips "
                        f"({dt / len(x) * 1000:.2f} ms per clip in the TA)")  # fmt: skip

            step("operation", "test split", split)
        g.close()
    finally:
        ctx["lg"].close()
    return steps
