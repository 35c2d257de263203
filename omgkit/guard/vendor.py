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
import io
import json
import os
import secrets
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from omg_ta import license as lic
from omg_ta.cbor_limits import check_cbor
from omg_ta.errors import (
    BadParametersError,
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
from ..tee.wire import error_of, error_reply
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

        for pp in (self.path / "models").glob("*.omgpkg"):
            h = parse_header(pp.read_bytes())[0]
            if (h.model_id, h.pt_sha256, h.runtime) == (
                release.model_id,
                release.sha256,
                release.runtime,
            ):
                return h.model_version
        return self.next_version(release.model_id)

    def next_version(self, model_id: str) -> int:
        """One above every version this vendor sealed of ``model_id``: newer than any a device ran."""
        from omg_ta.package import parse_header

        used = [h.model_version for h in (parse_header(pp.read_bytes())[0]
                                          for pp in (self.path / "models").glob("*.omgpkg"))
                if h.model_id == model_id]  # fmt: skip
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


MAX_BODY = 64 << 10
"""The largest request body the vendor service reads, in bytes (64 KiB).

The largest request a device of ours makes is a license request whose token
carries a 64-byte nonce, both KEM keys (ML-KEM-768's is 1,184 bytes) and the
longest chain the vendor accepts (four certificates): 3.3 kB. The limit
leaves room for about twenty of those, or a chain of four RSA-4096
certificates.
"""
MAX_ITEMS = 64
"""The most CBOR items a request may have (a license request has 9): checked
before decoding, so a body of one-byte items cannot become 64 Ki objects."""
READ_TIMEOUT = 5.0
"""Seconds a client has, from connecting, to send its whole request (line,
headers and body), however it trickles in; then the connection is dropped."""
MAX_REPLY = 1 << 20
"""The most bytes :class:`VendorClient` reads of a reply (a license is ~2 kB)."""
MAX_MODEL_ID = 128


class _Refused(Exception):
    """A request refused for its form (endpoint, length, body), with its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _DeadlineReader(io.RawIOBase):
    """A socket's input that times out at a deadline, not only after an idle gap."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request took too long")
        self._sock.settimeout(left)
        return self._sock.recv_into(b)


def _license_request(req: Mapping) -> tuple[bytes, str, int, str]:
    """The fields of a license request, each of the type it must be (checked before the token,
    so a malformed request does not spend its nonce)."""
    token, mid = req.get("token"), req.get("model_id")
    ver, kem = req.get("model_version"), req.get("kem", "X25519")
    if not isinstance(token, bytes) or not token:
        raise BadParametersError("license request: token must be the attestation token (bytes)")
    if not isinstance(mid, str) or not 1 <= len(mid) <= MAX_MODEL_ID:
        raise BadParametersError(
            f"license request: model_id must be text of 1 to {MAX_MODEL_ID} characters"
        )
    if type(ver) is not int or not 1 <= ver < 1 << 63:
        raise BadParametersError(
            "license request: model_version must be an integer from 1 to 2**63 - 1"
        )
    if not isinstance(kem, str):
        raise BadParametersError("license request: kem must be text (X25519 or MLKEM768-X25519)")
    return token, mid, ver, kem


def _decode_request(body: bytes) -> Mapping:
    """A request body as a CBOR map (an empty body is an empty map)."""
    if not body:
        return {}
    try:
        check_cbor(body, MAX_ITEMS)
        req = cbor2.loads(body)
    except Exception as e:  # cbor2 raises many types on hostile input
        detail = str(e) if isinstance(e, BadParametersError) else type(e).__name__
        raise BadParametersError(
            f"request body is not CBOR the vendor service reads ({detail})"
        ) from None
    if not isinstance(req, Mapping):
        raise BadParametersError(f"request body must be a CBOR map, not {type(req).__name__}")
    return req


class _Handler(http.server.BaseHTTPRequestHandler):
    """One connection, one request (HTTP/1.0): read within a deadline and a size limit, answer
    CBOR, success or failure: a failure is ``{ok: false, code, message}`` like every other."""

    vendor: Vendor
    timeout: float = READ_TIMEOUT
    max_body: int = MAX_BODY
    server_version = "omgkit-vendor"

    def setup(self) -> None:
        super().setup()  # the socket's timeout: self.timeout for any one read or write
        self.rfile.close()  # (the socket's own file; ours is below)
        self.rfile = io.BufferedReader(
            _DeadlineReader(self.connection, time.monotonic() + self.timeout)
        )

    def log_message(self, *a) -> None:
        pass

    def _reply(self, status: int, what: dict | BaseException) -> None:
        obj = what if isinstance(what, dict) else error_reply(what, "vendor")
        body = cbor2.dumps(obj)
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # a request line we could not parse
            self.request_version = "HTTP/1.0"
        try:
            self.connection.settimeout(self.timeout)
            self.send_response(status)
            self.send_header("Content-Type", "application/cbor")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client is gone

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors the HTTP layer finds (request line, method, version, headers) in our shape."""
        text = message or self.responses.get(code, ("error",))[0]
        self._reply(code, BadParametersError(f"HTTP {int(code)}: {text}"))

    def _discard_input(self) -> None:
        """Read and drop what the client still sends (into one fixed buffer, for at most
        ``timeout`` s) before closing, so it reads our reply rather than a connection reset."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            buf = bytearray(1 << 16)
            end = time.monotonic() + self.timeout
            while (left := end - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not self.connection.recv_into(buf):
                    break
        except OSError:
            pass

    def _body(self) -> bytes:
        """The body, exactly Content-Length bytes of it (a plain count, at most ``max_body``)."""
        if self.headers.get("Transfer-Encoding") is not None:
            raise _Refused(
                411, "send the request body with a Content-Length, not a Transfer-Encoding"
            )
        values = [v.strip() for v in self.headers.get_all("Content-Length") or []]
        if not values:
            return b""  # HTTP: no length, no body
        v = values[0]
        if any(x != v for x in values):
            raise _Refused(400, "conflicting Content-Length headers")
        if not (v.isascii() and v.isdigit()):
            raise _Refused(400, f"Content-Length {v[:24]!r} is not a byte count")
        if len(v) > 18 or int(v) > self.max_body:
            raise _Refused(413, f"request body of {v[:24]} bytes (Content-Length) is larger than "
                                f"the {self.max_body} bytes the vendor service accepts")  # fmt: skip
        n = int(v)
        data = self.rfile.read(n) if n else b""
        if len(data) != n:
            raise _Refused(
                400, f"request body ended after {len(data)} of {n} bytes (Content-Length)"
            )
        return data

    def do_POST(self) -> None:
        v = self.vendor
        try:
            if self.path not in ("/v1/nonce", "/v1/license"):
                raise _Refused(404, f"no such endpoint: POST {self.path[:64]} (the vendor service "
                                    "has POST /v1/nonce and /v1/license)")  # fmt: skip
            body = self._body()
        except _Refused as e:
            self._reply(e.status, BadParametersError(str(e)))
            return self._discard_input()
        except TimeoutError:
            return self._reply(408, BadParametersError(
                f"the request was not received within {self.timeout:g} s"))  # fmt: skip
        try:
            req = _decode_request(body)
            if self.path == "/v1/nonce":
                return self._reply(200, {"nonce": v.new_nonce()})
            token, mid, ver, kem = _license_request(req)
            blob = v.issue_license(token, model_id=mid, model_version=ver, kem=kem)
            return self._reply(200, {"license": blob})
        except Exception as e:  # one error reply: (result code, message)
            return self._reply(403 if isinstance(e, SecurityError) else 400, e)


class _Server(http.server.ThreadingHTTPServer):
    """A thread per connection (daemon threads): a slow client holds only its own."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        e = sys.exc_info()[1]
        if not isinstance(e, OSError):  # a peer that went away is no error of ours
            print(f"vendor: internal error {type(e).__name__}", file=sys.stderr)


class VendorServer:
    """The vendor's online service (only preparation needs it).

    Each connection carries one request and has ``timeout`` seconds to send
    all of it; a body is at most ``max_body`` bytes, with a plain
    Content-Length. Anything else is answered with an error reply (400, 408,
    411, 413) and the connection closed.
    """

    def __init__(self, vendor: Vendor, host: str = "127.0.0.1", port: int = 0, *,
                 timeout: float = READ_TIMEOUT, max_body: int = MAX_BODY):  # fmt: skip
        self.vendor = vendor
        handler = type("Handler", (_Handler,), {"vendor": vendor, "timeout": float(timeout),
                                                 "max_body": int(max_body)})  # fmt: skip
        self._httpd = _Server((host, port), handler)
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
    """The device side's view of the vendor service.

    It reads at most :data:`MAX_REPLY` bytes of a reply, and for at most
    ``timeout`` seconds; a reply that is not a CBOR map from the service is
    :class:`VendorUnreachableError`, an error reply the error it stands for.
    """

    def __init__(self, url: str, timeout: float = 10.0):
        self.url, self.timeout = url.rstrip("/"), timeout

    def _not_vendor(self, path: str, what: str) -> VendorUnreachableError:
        return VendorUnreachableError(
            f"{self.url}{path} answered {what}: is it the vendor service?"
        )

    def _read(self, r, path: str, deadline: float) -> bytes:
        out = bytearray()
        while len(out) <= MAX_REPLY:
            if time.monotonic() > deadline:
                raise self._not_vendor(path, f"too slowly (over {self.timeout:g} s)")
            chunk = r.read1(min(1 << 16, MAX_REPLY + 1 - len(out)))  # what has arrived
            if not chunk:
                return bytes(out)
            out += chunk
        raise self._not_vendor(path, f"more than {MAX_REPLY} bytes")

    def _map(self, body: bytes) -> dict | None:
        try:
            obj = cbor2.loads(body)
        except Exception:  # cbor2 raises many types on hostile input
            return None
        return obj if isinstance(obj, dict) else None

    def _post(self, path: str, obj: dict) -> dict:
        req = urllib.request.Request(self.url + path, data=cbor2.dumps(obj), method="POST",
                                     headers={"Content-Type": "application/cbor"})  # fmt: skip
        deadline = time.monotonic() + self.timeout
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                body = self._map(self._read(r, path, deadline))
            if body is None:
                raise self._not_vendor(path, "something that is not a CBOR map")
            return body
        except urllib.error.HTTPError as e:
            with e:
                body = self._map(self._read(e, path, deadline))
            if body is None or "code" not in body:
                raise self._not_vendor(path, f"HTTP {e.code} without an error reply") from None
            raise error_of(body) from None
        except (urllib.error.URLError, OSError) as e:
            raise VendorUnreachableError(
                f"vendor service at {self.url} is unreachable ({e}); preparation needs it once, "
                "initialization and operation do not"
            ) from None

    def _field(self, path: str, reply: dict, name: str) -> bytes:
        value = reply.get(name)
        if not isinstance(value, bytes):
            raise self._not_vendor(path, f"a reply without {name} (bytes)")
        return value

    def new_nonce(self) -> bytes:
        return self._field("/v1/nonce", self._post("/v1/nonce", {}), "nonce")

    def issue_license(
        self, token: bytes, *, model_id: str, model_version: int, kem: str = "X25519"
    ) -> bytes:
        reply = self._post("/v1/license", {"token": token, "model_id": model_id,
                                           "model_version": model_version, "kem": kem})  # fmt: skip
        return self._field("/v1/license", reply, "license")
