"""The guard on a real secure world: the C TA under OP-TEE in QEMU, driven over SSH.

The same vendor, package, license, `omg deploy` and `omg run` as for an
emulated board; the TA is ta/optee/ta (the C core plus GP glue), the
measurement and the sealing key come from our pseudo-TA in OP-TEE's core.
The attacks are staged as the board's root; the memory scan reads every
normal-world process. Real parts only: OP-TEE 4.10 and TF-A built from
Debian's sources, qemu-system-aarch64, Debian's arm64 kernel, libteec.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import REPO, run_omg

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployed(optee_boards, tiny_run):
    """The tiny run deployed to oq1 with `omg deploy`, as a user would."""
    r = run_omg("deploy", "--board", optee_boards[0], "--run", str(tiny_run), timeout=900)
    assert "initialized in the board's TEE" in r.stdout
    return optee_boards[0]


def test_omg_run_labels_equal_plain_on_the_whole_test_split(deployed, tiny_corpus, tmp_path):
    out = tmp_path / "run.json"
    r = run_omg("run", "--board", deployed, "--data", str(tiny_corpus), "--split", "testing",
                "--json", str(out), timeout=900)  # fmt: skip
    d = json.loads(out.read_text())
    assert d["tee"] == "OP-TEE 4.10.0 (QEMU)" and d["source"] == "shared memory (evaluation mode)"
    assert d["clips"] > 20 and d["labels_equal_plain"] is True, d
    assert f"on {d['clips']}/{d['clips']} clips" in r.stdout


def test_the_three_phases_on_the_c_ta(deployed, tiny_run):
    """Attestation by the pseudo-TA (the measurement OP-TEE verified), provisioning, initialization."""
    from omg_ta.frontend import Frontend
    from omg_ta.runtime import load_runtime
    from omgkit.board import Board, RemoteEnclave
    from omgkit.board.workflow import default_vendor
    from omgkit.kws.release import Release

    v = default_vendor()
    release = Release.from_run(tiny_run)
    with Board(deployed) as b, RemoteEnclave(b) as r:
        token = r.attest(v.new_nonce())
        claims = v.verify_token(token)  # chain to the manufacturer, nonce, approved measurement
        assert claims.tee_version == "OP-TEE 4.10.0 (QEMU)" and set(claims.ta_keys) == {"X25519"}
        assert claims.device_id.hex() == r.call("info")["device_id"]
        # the measurement is the digest OP-TEE verified: the signed header's, and the image's own
        from omgkit.board import home
        from omgkit.board.optee_ta import TA_FILE, image_digest, measurement

        ta = (home.home() / "bundle-optee" / TA_FILE).read_bytes()
        assert claims.measurement == measurement(ta) == image_digest(ta)
        version = r.initialize()["model_version"]
        # verify_token consumed the nonce; a license needs a fresh attestation
        r.provision(
            v.issue_license(
                r.attest(v.new_nonce()), model_id=release.model_id, model_version=version
            )
        )
        model = r.initialize()
        assert model["runtime"] == "c" and model["labels"] == list(release.labels)
        assert model["scores_allowed"] is False and model["budget_left"] is None
        x = (np.random.default_rng(0).standard_normal((3, 16000)) * 3000).astype(np.int16)
        plain = load_runtime("c", release.model).classify(Frontend(release.frontend)(x)[..., None])
        assert r.classify_batch(x) == plain.tolist()


def test_operational_errors_keep_their_message(deployed):
    """GP carries only a code; the client asks the C TA for its message (CMD_LAST_ERROR)."""
    from omg_ta.errors import BadParametersError, BadStateError
    from omgkit.board import Board, RemoteEnclave

    with Board(deployed) as b, RemoteEnclave(b) as r:
        with pytest.raises(BadStateError, match="classify needs initialize first"):
            r.classify_batch(np.zeros((1, 16000), "int16"))
        with pytest.raises(BadParametersError, match="no secure microphone"):
            r.initialize()
            r.call("classify_mic", n=1)
        # an output one byte short of commands.classify_reply_max: refused before any audio is read
        b.sftp.putfo(io.BytesIO(_SHORT_OUTPUT.encode()), b.sftp_path("short_output.py"))
        _, out, _ = b.run(f"{b.addr.python} short_output.py; rm -f short_output.py", timeout=300)
    assert out.startswith("ShortBufferError the results of 3 clips need "), out


_SHORT_OUTPUT = """
from omg_ta import commands as C
from omgkit.board.agent import _root
from omgkit.guard.host import GuardedModel
from omgkit.tee.client import Output, Value

g = GuardedModel(_root() / "device", _root() / "normal")
info = g.initialize()
w = g.ctx.allocate_shared_memory(3 * C.CLIP_BYTES)
need = C.classify_reply_max(3, len(info["labels"]), info["scores_allowed"])
try:
    g._session().invoke(C.CMD_CLASSIFY, C.SIGNATURES[C.CMD_CLASSIFY],
                        [Value(C.SOURCE_BUFFER, 3), w.window(), Output(need - 1), None])
    print("accepted")
except Exception as e:
    print(type(e).__name__, e)
"""


def test_every_attack_fails_closed_with_its_own_error(deployed, optee_boards, tiny_run, tmp_path):
    from omgkit.board.attacks import BOARD_ATTACKS, stage_board
    from omgkit.board.workflow import default_vendor
    from omgkit.kws.release import Release

    release = Release.from_run(tiny_run).with_runtime("c")
    outcomes = stage_board(deployed, default_vendor(), release, other_url=optee_boards[1],
                           workdir=tmp_path)  # fmt: skip
    assert [o.attack for o in outcomes] == BOARD_ATTACKS
    assert all(o.as_expected for o in outcomes), [
        (o.attack.name, o.error, o.message) for o in outcomes
    ]
    assert len({o.error for o in outcomes}) == len(outcomes)
    run_omg("run", "--board", deployed, str(REPO / "data/golden/yes.wav"))  # the board works again


def test_no_normal_world_process_holds_the_model_or_the_users_audio(
    deployed, tiny_run, tiny_corpus
):
    """Root reads every normal-world process's memory while the TA holds the model and has classified.

    The model: in no process and no file. The audio: only on the evaluation
    path that handed it in over SSH (the agent and the processes that started
    it: its SSH session) - QEMU has no secure microphone; in no other
    process (tee-supplicant, init, the SSH server) and no file."""
    from omgkit.board import Board, RemoteEnclave
    from omgkit.board.attacks import scan_normal_world
    from omgkit.kws.dataset import load_dataset
    from omgkit.kws.release import Release

    release = Release.from_run(tiny_run)
    ds = load_dataset(tiny_corpus)
    x, _ = ds.load(ds.select("testing")[:8])
    with Board(deployed) as b, RemoteEnclave(b) as r:
        r.initialize()
        assert len(r.classify_batch(x)) == 8
        agent = r.call("info")["pid"]
        path, pid = [agent], agent  # the agent and the processes that started it (its SSH session)
        while pid > 1:
            pid = int(b.run(f"awk '/^PPid:/ {{print $2}}' /proc/{pid}/status")[1])
            path.append(pid)
        scan = scan_normal_world(deployed, {"model": release.model, "audio": x.tobytes()})
    assert scan["model"]["windows"] == 32 and scan["model"]["bytes"] > 1_000_000
    assert (
        scan["model"]["processes"] >= 4 and scan["model"]["files"] > 10
    )  # init, tee-supplicant, SSH, agent
    assert scan["model"]["found"] == 0, scan["model"]
    on_the_path = {f"({p})" for p in path[:-1]}
    where = scan["audio"]["where"]
    assert all(not name.startswith("file ") and name[name.rindex("(") :] in on_the_path
               for name in where), (path, scan["audio"])  # fmt: skip
    assert f"({agent})" in {
        name[name.rindex("(") :] for name in where
    }  # the scan finds what is there


def test_qemu_has_no_trusted_clock(deployed, tiny_run, tmp_path):
    """A limit, shown: the TA's clock is the normal world's; root sets it back and an expired
    license runs again (docs/threat-model.md says what hardware changes)."""
    from omgkit.board.attacks import BoardStage, expired_license_runs_with_the_clock_set_back
    from omgkit.board.workflow import default_vendor
    from omgkit.kws.release import Release

    st = BoardStage(deployed, default_vendor(), Release.from_run(tiny_run).with_runtime("c"),
                    workdir=tmp_path)  # fmt: skip
    out = expired_license_runs_with_the_clock_set_back(st)
    assert out == {"after_expiry": "LicenseExpiredError", "clock_set_back": "ran"}


def test_omg_bench_measures_plain_and_guarded_on_the_board(
    deployed, tiny_run, tiny_corpus, tmp_path
):
    """Both sides inside the board's normal world: the C core cross-compiled for aarch64 against
    the TA; the TA's memory as OP-TEE's statistics pseudo-TA counts it."""
    from omg_ta.ccore import plan
    from omg_ta.runtime import load_runtime
    from omgkit.kws.dataset import load_dataset
    from omgkit.kws.release import Release
    from omgkit.kws.run import RunDir
    from omgkit.reproduce import optee_table

    out = tmp_path / "bench.json"
    r = run_omg("bench", "--board", deployed, "--run", str(tiny_run), "--data", str(tiny_corpus),
                "--clips", "6", "-n", "4", "--json", str(out), timeout=900)  # fmt: skip
    assert "QEMU's figures, not a HiKey's" in r.stdout
    b = json.loads(out.read_text())
    assert b["tee"] == "OP-TEE 4.10.0 (QEMU)" and b["clips"] == 6 and b["runtime"] == "c"
    assert b["labels_equal"] is True
    # the aarch64 build of the core gives the labels the x86 build gives on the same clips
    release = Release.from_run(tiny_run)
    man = RunDir(tiny_run).manifest()
    ds = load_dataset(tiny_corpus)
    x, _ = ds.load(ds.evaluation_items("testing", man.holdout_engine)[:6])
    from omg_ta.frontend import Frontend

    host = load_runtime("c", release.model).classify(Frontend(release.frontend)(x)[..., None])
    assert b["labels"] == host.tolist()
    for phase in ("single", "initialization"):
        assert b[phase]["guarded"]["n"] >= 4 and b[phase]["plain"]["median_ms"] > 0
    for part in ("single", "batch"):  # paired blocks: each ratio inside its 95 % interval
        lo, hi = b[part]["ratio_ci95"]
        assert 0 < lo <= b[part]["ratio"] <= hi and b[part]["cpu_ratio"] > 0, part
    # the TA's heap held the decrypted model and the engine's arena, within the heap it was given
    heap, p = b["memory"]["ta_heap"], plan(release.model)
    assert heap["max_allocated"] >= len(release.model) + p.arena_bytes
    assert heap["max_allocated"] <= heap["size"] and heap["failed_allocations"] == 0
    assert (
        b["memory"]["ta_ram_held_bytes"] >= heap["size"]
    )  # the heap lives in the TA's secure pages
    assert b["memory"]["plain_bytes"]["arena"] == p.arena_bytes
    assert b["board_rtt"]["ping"]["n"] == 4
    table = optee_table({"tee": b["tee"], "clips": 6, "labels_equal_plain": True,
                         "accuracy_on_the_board": 1.0, "bench": b})  # fmt: skip
    assert "not a HiKey" in table and f"{b['single']['ratio']:.3f}" in table


def test_a_ta_named_after_the_pseudo_tas_input_cannot_derive_its_keys(optee_boards, tmp_path):
    """A TA re-signed with a leaked TA key, whose UUID spells the start of the pseudo-TA's
    device-key input, asks OP-TEE's system pseudo-TA for its "own" key. Under the system
    pseudo-TA's HUK usage that key would sign as the device (measured, before our second
    core patch: it did); under the pseudo-TA's own usage it is just another key."""
    from omgkit.board.attacks import steal_the_device_key

    out = steal_the_device_key(optee_boards[1], tmp_path)
    assert out["uuid"] == "2d474d4f-4544-4956-4345-2d4b45592d76"  # "OMG-DEVICE-KEY-v" in memory
    assert out["derived"] == 32 and out["signs_as_the_device"] is False


_RACE = """
import sys, threading
import numpy as np
from omg_ta import commands as C
from omg_ta.errors import BudgetExhaustedError
from omgkit.board.agent import _root
from omgkit.guard.host import GuardedModel

n = int(sys.argv[1])
hosts = [GuardedModel(_root() / "device", _root() / "normal") for _ in range(n)]
lefts = [h.initialize()["budget_left"] for h in hosts]
clip = np.zeros((1, C.CLIP_SAMPLES), "<i2")
done, refused, errors = [], [], []
start = threading.Barrier(n)

def spend(h):
    start.wait()
    while True:
        try:
            done.append(len(h.classify_batch(clip).labels))
        except BudgetExhaustedError:
            refused.append(1)
            return
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
            return

ts = [threading.Thread(target=spend, args=(h,)) for h in hosts]
[t.start() for t in ts]
[t.join() for t in ts]
print(lefts[0], sum(done), len(refused), errors)
"""


def test_concurrent_sessions_never_overspend_a_budget(deployed, tiny_run):
    """Four TA instances (one per session) race for a budget of 12 clips, one clip a call."""
    from omg_ta.license import Policy
    from omgkit.board import Board, RemoteEnclave
    from omgkit.board.workflow import default_vendor
    from omgkit.kws.release import Release

    v, release = default_vendor(), Release.from_run(tiny_run)
    with Board(deployed) as b:
        with RemoteEnclave(b) as r:
            version = r.initialize()["model_version"]
            r.provision(v.issue_license(
                r.attest(v.new_nonce()), model_id=release.model_id, model_version=version,
                policy=Policy(not_after=2**40, budget=12),
            ))  # fmt: skip
        b.sftp.putfo(io.BytesIO(_RACE.encode()), b.sftp_path("race.py"))
        try:
            _, out, _ = b.run(f"{b.addr.python} race.py 4; rm -f race.py", timeout=600)
        finally:
            with RemoteEnclave(b) as r:  # the board's license as it was: no budget
                r.prepare(v, model_id=release.model_id, model_version=version)
    budget, classified, refused, errors = out.strip().rsplit("\n", 1)[-1].split(" ", 3)
    assert errors == "[]" and budget == "12", out
    assert int(classified) == 12 and int(refused) == 4, out
