"""The three phases on emulated devices, and every attack as a test.

Real parts throughout: TEE daemons in their own processes, the vendor's
HTTP service, HPKE/Ed25519/AES-GCM from `cryptography`, TFLite runtimes.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from omg_ta import commands as C
from omg_ta.errors import (
    BadParametersError,
    BadStateError,
    BudgetExhaustedError,
    DeviceMismatchError,
    LicenseExpiredError,
    LicenseInvalidError,
    MeasurementNotApprovedError,
    NonceError,
    PackageIntegrityError,
    RollbackError,
    SecurityError,
    ShortBufferError,
    TALoadError,
    TokenInvalidError,
    UnsealError,
)
from omg_ta.frontend import Frontend
from omg_ta.license import Policy
from omg_ta.package import parse_header
from omg_ta.runtime import load_runtime
from omgkit.guard import VendorClient, VendorServer
from omgkit.guard.attacks import flip, patch_ta, ta_dir
from omgkit.guard.vendor import VendorUnreachableError
from omgkit.tee import TeeDaemon, mic_feed, set_clock_offset
from omgkit.tee.bundle import sign_bundle


@pytest.fixture(scope="module")
def clips(tiny_corpus):
    from omgkit.kws.dataset import load_dataset

    ds = load_dataset(tiny_corpus)
    x, y = ds.load(ds.select("testing"))
    return x, y


def test_three_phases_and_labels_equal_plain(world_ready, clips):
    world, g = world_ready
    info = g.initialize()
    assert (
        info["model_id"] == world.release.model_id
        and info["labels"] == world.labels
        and info["scores_allowed"] is False
    )
    x, _ = clips
    guarded = g.classify_batch(x)
    plain = load_runtime("litert", world.model).classify(Frontend(world.frontend)(x)[..., None])
    assert guarded.labels == plain.tolist()  # the whole test split, same runtime
    assert guarded.scores is None  # the default license keeps scores inside
    mic_feed(g.device_dir, x[:5])
    heard = g.classify_mic(5)
    assert heard.labels == plain[:5].tolist()
    # a batch larger than the shared-memory window streams through it in order
    big = np.resize(x, (2 * g.SHARED_CLIPS + 7, x.shape[1]))
    assert g.classify_batch(big).labels == np.resize(plain, len(big)).tolist()
    assert (
        len(g._window.buffer) == C.SHARED_WINDOW_CLIPS * C.CLIP_BYTES
    )  # bounded, whatever the batch
    from omgkit.errors import ConfigError

    with pytest.raises(ConfigError, match="whole clips"):
        g.classify_batch(x[:1], g.ctx.allocate_shared_memory(100))


def test_initialize_from_shared_memory(guard_world):
    """Inputs may come as memrefs into shared memory (views, not copies, in the TEE)."""
    from omgkit.guard.host import LICENSE, PACKAGE, SEALED
    from omgkit.tee.client import Output

    g = guard_world.prepared("dev-shm-inputs")
    blobs = [(g.storage / n).read_bytes() for n in (SEALED, LICENSE, PACKAGE)]
    shm = g.ctx.allocate_shared_memory(sum(map(len, blobs)))
    windows, off = [], 0
    for b in blobs:
        shm.buffer[off : off + len(b)] = b
        windows.append(shm.window(off, len(b)))
        off += len(b)
    sig = C.SIGNATURES[C.CMD_INITIALIZE]
    out = g._session().invoke(C.CMD_INITIALIZE, sig, [*windows, Output()])
    assert b"kws" in out[3]
    g.close()


@pytest.fixture(scope="module")
def world_ready(any_guard_world):
    """A prepared device, on each frontend (MFCC and log-mel)."""
    g = any_guard_world.prepared("dev-main")
    yield any_guard_world, g
    g.close()


def test_offline_after_preparation(guard_world, clips):
    g = guard_world.host("dev-offline")
    srv = VendorServer(guard_world.vendor).start()
    url = srv.url
    g.prepare(VendorClient(url), model_id="kws", model_version=1)
    g.install_package(guard_world.packages[1])
    g.close()
    srv.stop()
    with pytest.raises(VendorUnreachableError, match="preparation needs it once"):
        VendorClient(url, timeout=2).new_nonce()
    # a new start of the app: new session, TA loaded and measured again, no network
    g2 = guard_world.host("dev-offline")
    g2.initialize()
    assert len(g2.classify_batch(clips[0][:4]).labels) == 4
    g2.close()


def test_modified_ta_cannot_unseal(guard_world):
    g = guard_world.prepared("dev-modta")
    g.close()
    patch_ta(g.device_dir)
    # unsigned: the TEE refuses to load it at all
    g2 = guard_world.host("dev-modta")
    with pytest.raises(TALoadError):
        g2.initialize()
    g2.close()
    # re-signed with a key the TEE trusts (say a leaked development key): it loads, but
    # its measurement differs, so the sealed key does not open
    sign_bundle(ta_dir(g.device_dir), guard_world.ta_key)
    g3 = guard_world.host("dev-modta")
    with pytest.raises(UnsealError):
        g3.initialize()
    g3.close()


def test_copied_to_another_device(guard_world):
    g = guard_world.prepared("dev-a")
    g.close()
    other = guard_world.host("dev-b", storage="dev-b-normal")
    shutil.copytree(g.storage, other.storage, dirs_exist_ok=True)
    with pytest.raises(DeviceMismatchError):
        other.initialize()
    other.close()


def test_expired_license(guard_world):
    g = guard_world.host("dev-expiry")
    token = g.attest(guard_world.vendor.new_nonce())
    blob = guard_world.vendor.issue_license(token, model_id="kws", model_version=1,
                                            policy=Policy(not_after=int(time.time()) + 600))  # fmt: skip
    g.provision(blob)
    g.install_package(guard_world.packages[1])
    g.initialize()  # valid now
    g.close()
    set_clock_offset(g.device_dir, 3600)  # an hour later, by the TEE's clock
    g2 = guard_world.host("dev-expiry")
    with pytest.raises(LicenseExpiredError):
        g2.initialize()
    g2.close()
    set_clock_offset(g.device_dir, 0)


def test_rollback_to_older_model_refused(guard_world):
    old = guard_world.prepared("dev-rollback", version=1)
    old_files = {p.name: p.read_bytes() for p in old.storage.iterdir()}
    old.close()
    new = guard_world.prepared("dev-rollback", version=2)
    assert new.initialize()["model_version"] == 2  # the TEE counter is now 2
    new.close()
    for name, data in old_files.items():  # the attacker restores every old file
        (new.storage / name).write_bytes(data)
    again = guard_world.host("dev-rollback")
    with pytest.raises(RollbackError):
        again.initialize()
    again.close()


@pytest.mark.parametrize("where", ["ciphertext", "header", "signature"])
def test_tampered_package(world_ready, where):
    world, g = world_ready
    pkg = world.packages[1]
    _, _, body = parse_header(pkg)  # body: offset of the first segment; the signature ends there
    index = {"ciphertext": len(pkg) - 40, "header": 20, "signature": body - 10}[where]
    g.install_package(flip(pkg, index))
    try:
        with pytest.raises(PackageIntegrityError):
            g.initialize()
    finally:
        g.install_package(pkg)


def test_tampered_license_and_sealed_blob(world_ready):
    world, g = world_ready
    lic_path, sealed_path = g.storage / "license.cose", g.storage / "sealed_key.bin"
    lic, sealed = lic_path.read_bytes(), sealed_path.read_bytes()
    try:
        lic_path.write_bytes(flip(lic, len(lic) - 100))
        with pytest.raises(LicenseInvalidError):
            g.initialize()
        lic_path.write_bytes(lic)
        sealed_path.write_bytes(flip(sealed, len(sealed) - 5))
        with pytest.raises(UnsealError):
            g.initialize()
    finally:
        lic_path.write_bytes(lic)
        sealed_path.write_bytes(sealed)


def test_tampered_token(guard_world):
    g = guard_world.host("dev-token")
    token = g.attest(guard_world.vendor.new_nonce())
    with pytest.raises(TokenInvalidError):
        guard_world.vendor.issue_license(
            flip(token, len(token) - 70), model_id="kws", model_version=1
        )
    g.close()


def test_replayed_attestation(guard_world):
    g = guard_world.host("dev-replay")
    token = g.attest(guard_world.vendor.new_nonce())
    guard_world.vendor.issue_license(token, model_id="kws", model_version=1)
    with pytest.raises(NonceError):  # the same token again: its nonce is spent
        guard_world.vendor.issue_license(token, model_id="kws", model_version=1)
    with pytest.raises(NonceError):  # a nonce the vendor never issued
        guard_world.vendor.issue_license(g.attest(b"\x07" * 32), model_id="kws", model_version=1)
    g.close()


def test_unapproved_measurement(guard_world, tmp_path):
    from omgkit.guard import Vendor

    strict = Vendor.create(tmp_path / "strict-vendor")
    strict.trust_manufacturer(guard_world.manufacturer.root_der)
    strict.seal_model(guard_world.release, model_version=1)
    g = guard_world.host("dev-unapproved")
    with pytest.raises(MeasurementNotApprovedError):
        strict.issue_license(g.attest(strict.new_nonce()), model_id="kws", model_version=1)
    g.close()


def test_budget_and_scores_policy(guard_world, clips):
    g = guard_world.host("dev-budget")
    token = g.attest(guard_world.vendor.new_nonce())
    pol = Policy(not_after=int(time.time()) + 600, budget=6, scores=True)
    g.provision(
        guard_world.vendor.issue_license(token, model_id="kws", model_version=1, policy=pol)
    )
    g.install_package(guard_world.packages[1])
    assert g.initialize()["budget_left"] == 6
    # an output too small for the reply is refused before any budget is spent
    from omgkit.tee.client import Output, Value

    win = g.ctx.allocate_shared_memory(4 * C.CLIP_BYTES)
    win.buffer[:] = np.ascontiguousarray(clips[0][:4], "<i2").tobytes()
    small = Output(C.classify_reply_max(4, len(guard_world.release.labels), True) - 1)
    with pytest.raises(ShortBufferError, match="need"):
        g._session().invoke(C.CMD_CLASSIFY, C.SIGNATURES[C.CMD_CLASSIFY],
                            [Value(C.SOURCE_BUFFER, 4), win.window(), small, None])  # fmt: skip
    r = g.classify_batch(clips[0][:4])
    assert r.scores is not None and np.allclose(np.sum(r.scores, axis=1), 1.0, atol=0.02)
    with pytest.raises(BudgetExhaustedError):
        g.classify_batch(clips[0][:3])  # 4 used, 2 left
    g.close()


@pytest.mark.parametrize("scores", [False, True])
def test_the_classify_reply_bound_holds(scores):
    """commands.classify_reply_max bounds the Python TA's encoding (float64 scores) at every size."""
    import cbor2

    for n in (1, 23, 24, 255, 256, C.MAX_BATCH):
        for classes in (2, 12, 23, 24, 40, 300):  # labels of 1, 2 and 3 bytes
            reply = {"labels": [classes - 1] * n}
            if scores:
                reply["scores"] = [[0.123456789] * classes] * n
            assert len(cbor2.dumps(reply)) <= C.classify_reply_max(n, classes, scores)


def test_post_quantum_kem(guard_world, clips):
    g = guard_world.prepared("dev-pq", kem="MLKEM768-X25519")
    g.initialize()
    assert len(g.classify_batch(clips[0][:2]).labels) == 2
    g.close()


def test_commands_out_of_order_and_bad_parameters(guard_world):
    g = guard_world.host("dev-order")
    with pytest.raises(BadStateError, match="initialize first"):
        g.classify_mic(1)
    sess = g._session()
    with pytest.raises(BadParametersError, match="parameter types"):
        sess.invoke(C.CMD_INITIALIZE, C.param_types(C.VALUE_INPUT), [None] * 4)
    with pytest.raises(BadParametersError, match="16 to 64 bytes"):
        g.attest(b"short")
    with pytest.raises(BadStateError, match="get_attestation first"):
        guard_world.host("dev-order2").provision(b"x")
    g.close()


def test_last_error_gives_an_operational_message_never_a_refusals(guard_world):
    """CMD_LAST_ERROR: what a TEE without messages on its transport (libteec) asks for."""
    from omgkit.tee.client import Output

    g = guard_world.host("dev-last-error")
    sess = g._session()
    last = C.SIGNATURES[C.CMD_LAST_ERROR]
    assert sess.invoke(C.CMD_LAST_ERROR, last, [Output(), None, None, None])[0] == b""
    with pytest.raises(BadStateError):
        g.classify_mic(1)
    msg = sess.invoke(C.CMD_LAST_ERROR, last, [Output(), None, None, None])[0]
    assert msg == b"classify needs initialize first"
    with pytest.raises(LicenseInvalidError):
        g.attest(b"\x01" * 16)
        g.provision(b"\xa0" * 40)  # not a license: a refusal, whose detail stays inside
    assert sess.invoke(C.CMD_LAST_ERROR, last, [Output(), None, None, None])[0] == b""
    g.close()


def test_security_errors_say_nothing_specific(world_ready):
    world, g = world_ready
    g.install_package(flip(world.packages[1], len(world.packages[1]) - 1))
    try:
        with pytest.raises(SecurityError) as e:
            g.initialize()
        assert str(e.value) == PackageIntegrityError.default_message
    finally:
        g.install_package(world.packages[1])


def test_daemon_down_is_a_clear_error(guard_world):
    from omgkit.tee import TeeUnavailableError

    path = guard_world.device("dev-down")
    guard_world.daemons["dev-down"].stop()
    g = guard_world.host("dev-down")
    with pytest.raises(TeeUnavailableError, match="no TEE daemon"):
        g.attest(b"\x01" * 16)
    guard_world.daemons["dev-down"] = TeeDaemon(path).start()


def test_every_staged_attack_fails_with_its_own_error(any_guard_world):
    """The recipe behind `omg guard attacks`, notebook 06 and the walkthrough's toggles."""
    from omgkit.guard.attacks import ATTACKS, stage

    outcomes = stage(any_guard_world.local, any_guard_world.release)
    assert [o.attack for o in outcomes] == ATTACKS
    assert all(o.blocked for o in outcomes), [(o.attack.name, o.error, o.message) for o in outcomes]
    errors = [o.error for o in outcomes]
    assert len(set(errors)) == len(errors)  # each attack is told apart by its error
