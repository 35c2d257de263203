"""The model vendor: keys, approved measurements, nonces, licenses, and its service.

A vendor directory holds the vendor's Ed25519 signing key (mode 0600), the
model keys it generated (``models/``, 0600), the manufacturer roots and TA
measurements it trusts (``vendor.json``), the nonces it handed out and not
yet seen back (``nonces.json``), and a ledger of every license it issued
(``ledger.jsonl``). :class:`VendorServer` offers nonces and licenses over
HTTP on loopback; nothing else of the protocol needs the vendor online.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from omg_ta import license as lic
from omg_ta.errors import (
    MeasurementNotApprovedError,
    NonceError,
    OmgError,
    SecurityError,
)
from omg_ta.package import seal_package
from omg_ta.secret import Secret

from ..errors import ConfigError
from ..kws.release import Release
from ..tee.pki import raw_public, read_private_key, write_private_key
from ..tee.token import Claims, verify_token
from ..util import atomic_write_bytes, atomic_write_text, write_secret

NONCE_TTL = 300
DEFAULT_LICENSE_DAYS = 30


class Vendor:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path / "vendor.json").is_file():
            raise ConfigError(
                f"{self.path} is not a vendor directory; create one with `omg vendor init`"
            )
        self._lock = threading.Lock()

    @classmethod
    def create(cls, path: str | os.PathLike) -> Vendor:
        p = Path(path)
        (p / "models").mkdir(parents=True, exist_ok=True)
        os.chmod(p / "models", 0o700)
        write_private_key(p / "vendor_key.pem", Ed25519PrivateKey.generate())
        atomic_write_text(
            p / "vendor.json", json.dumps({"approved": [], "roots": []}, indent=2) + "\n"
        )
        atomic_write_text(p / "nonces.json", "{}\n")
        return cls(p)

    # -- configuration -----------------------------------------------------
    def _conf(self) -> dict:
        return json.loads((self.path / "vendor.json").read_text())

    def _save_conf(self, c: dict) -> None:
        atomic_write_text(self.path / "vendor.json", json.dumps(c, indent=2, sort_keys=True) + "\n")

    def _key(self) -> Ed25519PrivateKey:
        return read_private_key(self.path / "vendor_key.pem")

    @property
    def public_raw(self) -> bytes:
        return raw_public(self._key().public_key())

    def public_key(self):
        return self._key().public_key()

    def trust_manufacturer(self, root_der: bytes) -> None:
        c = self._conf()
        if root_der.hex() not in c["roots"]:
            c["roots"].append(root_der.hex())
            self._save_conf(c)

    def approve(self, measurement: bytes) -> None:
        c = self._conf()
        if measurement.hex() not in c["approved"]:
            c["approved"].append(measurement.hex())
            self._save_conf(c)

    def approved(self) -> list[bytes]:
        return [bytes.fromhex(m) for m in self._conf()["approved"]]

    # -- models --------------------------------------------------------------
    def _model_key_path(self, model_id: str, version: int) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)
        return self.path / "models" / f"{safe}@{int(version)}.key"

    def _model_key(self, model_id: str, version: int) -> Secret:
        kp = self._model_key_path(model_id, version)
        if not kp.is_file():
            raise ConfigError(f"no model {model_id!r} version {version} sealed by this vendor")
        return Secret(kp.read_bytes())

    def seal_model(self, release: Release, *, model_version: int) -> bytes:
        """Check a release's model, encrypt it under a fresh key (kept here), sign the package.

        A model that would not run in the TA is refused before anything is
        written (``Release.check``: ``ModelFormatError`` saying what is
        wrong). A version names one model: sealing the same release again
        returns the same package (so a redeployment sends nothing); another
        model or other settings under a used version are refused.
        """
        from omg_ta.package import parse_header

        mid, ver = release.model_id, int(model_version)
        if ver < 1:
            raise ConfigError(f"model versions start at 1, not {ver}")
        release.check()
        kp = self._model_key_path(mid, ver)
        pp = kp.with_suffix(".omgpkg")
        spec = {"frontend": release.frontend.to_dict()}
        if pp.is_file():
            old = parse_header(pp.read_bytes())[0]
            same = (old.pt_sha256, old.runtime, old.input, tuple(old.labels)) == (
                release.sha256, release.runtime, spec, release.labels)  # fmt: skip
            if same:
                return pp.read_bytes()
            raise ConfigError(
                f"model {mid!r} version {ver} was sealed already, with another model or other "
                "settings; give this one a new version (--version)"
            )
        if not kp.exists():
            write_secret(kp, secrets.token_bytes(32))
        key = self._model_key(mid, ver)
        pkg = seal_package(release.model, key.reveal(), self._key(), model_id=mid, model_version=ver,
                           runtime=release.runtime, input_spec=spec, labels=list(release.labels))  # fmt: skip
        atomic_write_bytes(pp, pkg)
        return pkg

    def version_for(self, release: Release) -> int:
        """The version this release was sealed under, or the next unused one of its model id."""
        from omg_ta.package import parse_header

        used = []
        for pp in (self.path / "models").glob("*.omgpkg"):
            h = parse_header(pp.read_bytes())[0]
            if h.model_id == release.model_id:
                if h.pt_sha256 == release.sha256 and h.runtime == release.runtime:
                    return h.model_version
                used.append(h.model_version)
        return max(used, default=0) + 1

    # -- preparation ---------------------------------------------------------
    def new_nonce(self, ttl: int = NONCE_TTL) -> bytes:
        n = secrets.token_bytes(32)
        with self._lock:
            d = json.loads((self.path / "nonces.json").read_text())
            now = int(time.time())
            d = {k: v for k, v in d.items() if v > now}
            d[n.hex()] = now + ttl
            atomic_write_text(self.path / "nonces.json", json.dumps(d) + "\n")
        return n

    def _consume_nonce(self, nonce: bytes) -> None:
        with self._lock:
            d = json.loads((self.path / "nonces.json").read_text())
            exp = d.pop(nonce.hex(), None)
            atomic_write_text(self.path / "nonces.json", json.dumps(d) + "\n")
        if exp is None or exp < time.time():
            raise NonceError()

    def verify_token(self, token: bytes) -> Claims:
        """Chain to a trusted manufacturer, fresh single-use nonce, approved measurement."""
        roots = [x509.load_der_x509_certificate(bytes.fromhex(r)) for r in self._conf()["roots"]]
        if not roots:
            raise ConfigError(
                "the vendor trusts no manufacturer root yet (Vendor.trust_manufacturer)"
            )
        claims = None
        last: OmgError | None = None
        for root in roots:
            try:
                claims = verify_token(token, root)
                break
            except SecurityError as e:
                last = e
        if claims is None:
            raise last or SecurityError()
        self._consume_nonce(claims.nonce)
        if claims.measurement not in self.approved():
            raise MeasurementNotApprovedError()
        return claims

    def issue_license(self, token: bytes, *, model_id: str, model_version: int, policy: lic.Policy | None = None,
                      kem: str = "X25519") -> bytes:  # fmt: skip
        if kem not in lic.KEMS:
            from ..errors import UnknownNameError

            raise UnknownNameError("KEM", kem, list(lic.KEMS))
        claims = self.verify_token(token)
        model_key = self._model_key(model_id, model_version)
        now = int(time.time())
        policy = policy or lic.Policy(not_after=now + DEFAULT_LICENSE_DAYS * 86400)
        license_id = secrets.token_bytes(16)
        blob = lic.issue(self._key(), license_id=license_id, model_id=model_id, model_version=model_version,
                         device_id=claims.device_id, measurement=claims.measurement, issued_at=now,
                         policy=policy, kem=kem, recipient=claims.recipient(kem), model_key=model_key)  # fmt: skip
        with self._lock, open(self.path / "ledger.jsonl", "a") as f:
            f.write(json.dumps({"license_id": license_id.hex(), "model_id": model_id, "model_version": model_version,
                                "device_id": claims.device_id.hex(), "measurement": claims.measurement.hex(),
                                "issued_at": now, "policy": policy.to_cbor(), "kem": kem}) + "\n")  # fmt: skip
        return blob

    def ledger(self) -> list[dict]:
        f = self.path / "ledger.jsonl"
        return [json.loads(line) for line in f.read_text().splitlines()] if f.is_file() else []


class VendorServer:
    """The vendor's online service (only preparation needs it)."""

    def __init__(self, vendor: Vendor, host: str = "127.0.0.1", port: int = 0):
        self.vendor = vendor
        v = vendor

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self, status: int, obj: dict) -> None:
                body = cbor2.dumps(obj)
                self.send_response(status)
                self.send_header("Content-Type", "application/cbor")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                if n > 1 << 20:
                    return self._reply(413, {"message": "request too large"})
                try:
                    req = cbor2.loads(self.rfile.read(n)) if n else {}
                    if self.path == "/v1/nonce":
                        return self._reply(200, {"nonce": v.new_nonce()})
                    if self.path == "/v1/license":
                        blob = v.issue_license(req["token"], model_id=req["model_id"],
                                               model_version=int(req["model_version"]), kem=req.get("kem", "X25519"))  # fmt: skip
                        return self._reply(200, {"license": blob})
                    return self._reply(404, {"message": "no such endpoint"})
                except Exception as e:  # one error reply: (result code, message)
                    from ..tee.wire import error_reply

                    status = 403 if isinstance(e, SecurityError) else 400
                    return self._reply(status, error_reply(e, "vendor"))

        self._httpd = http.server.ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        h, p = self._httpd.server_address[:2]
        return f"http://{h}:{p}"

    def start(self) -> VendorServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> VendorServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class VendorUnreachableError(OmgError):
    """The vendor service does not answer (only preparation needs it)."""


class VendorClient:
    """The device side's view of the vendor service."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.url, self.timeout = url.rstrip("/"), timeout

    def _post(self, path: str, obj: dict) -> dict:
        req = urllib.request.Request(self.url + path, data=cbor2.dumps(obj), method="POST",
                                     headers={"Content-Type": "application/cbor"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return cbor2.loads(r.read())
        except urllib.error.HTTPError as e:
            from ..tee.wire import error_of

            try:
                body = cbor2.loads(e.read())
            except Exception:
                body = None
            if not isinstance(body, dict) or "code" not in body:
                raise VendorUnreachableError(
                    f"{self.url}{path} answered HTTP {e.code} without an error reply: is it the vendor service?"
                ) from None
            raise error_of(body) from None
        except (urllib.error.URLError, OSError) as e:
            raise VendorUnreachableError(
                f"vendor service at {self.url} is unreachable ({e}); preparation needs it once, "
                "initialization and operation do not"
            ) from None

    def new_nonce(self) -> bytes:
        return self._post("/v1/nonce", {})["nonce"]

    def issue_license(
        self, token: bytes, *, model_id: str, model_version: int, kem: str = "X25519"
    ) -> bytes:
        return self._post("/v1/license", {"token": token, "model_id": model_id, "model_version": model_version,
                                          "kem": kem})["license"]  # fmt: skip
