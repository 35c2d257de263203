"""A board as a connection object (paramiko), for emulated and real boards alike.

``Board(url)`` stores its parameters and connects on first use; it is a
context manager that closes what it opened and reuses one SFTP client.
URLs:

- ``emu://NAME`` — a board made by ``omg board create NAME``: emulated,
  or OP-TEE in QEMU (``--kind optee-qemu``; its ``board.json`` gives the
  board directory and python);
- ``ssh://user@host:port/ROOT?python=PATH&key=PATH`` — any board over
  SSH (a HiKey 960, or OpenSSH on loopback). ``ROOT`` is the board
  directory, relative to the user's home unless it starts with ``//``
  (default ``omg-board``); ``python`` is the board's interpreter.

Host keys are pinned: paramiko's ``RejectPolicy`` with the workbench's
``known_hosts``. An emulated board registers its key when created; a real
board's key is added by ``omg board trust URL``, which shows the
fingerprint. TCP_NODELAY is set on our own socket (paramiko does not), and
keepalives run every 15 s.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shlex
import socket
import urllib.parse
from pathlib import Path

import paramiko

from ..errors import (
    BoardAuthError,
    BoardUnreachableError,
    ConfigError,
    HostKeyChangedError,
    RemoteCommandError,
    UnknownHostKeyError,
)
from . import home as _home


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclasses.dataclass(frozen=True)
class BoardAddress:
    host: str
    port: int
    user: str
    root: str
    python: str
    key: str
    emulated: bool = False
    name: str = ""

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def parse_url(url: str) -> BoardAddress:
    u = urllib.parse.urlsplit(url)
    if u.scheme == "emu":
        name = u.netloc or u.path.lstrip("/")
        meta = _home.boards_dir() / name / "board.json"
        if not meta.is_file():
            known = sorted(
                p.name for p in _home.boards_dir().iterdir() if (p / "board.json").is_file()
            )
            raise ConfigError(f"no board {name!r} (known: {', '.join(known) or 'none'}); "
                              f"create it with `omg board create {name}`")  # fmt: skip
        m = json.loads(meta.read_text())  # an OP-TEE board names its board directory and python
        return BoardAddress("127.0.0.1", int(m["port"]), m["user"], m.get("root", "."), m["python"],
                            str(_home.client_key()), emulated=True, name=name)  # fmt: skip
    if u.scheme == "ssh":
        if not u.hostname:
            raise ConfigError(f"{url}: no host; use ssh://user@host:port/root")
        q = urllib.parse.parse_qs(u.query)
        root = u.path[1:] if u.path.startswith("//") else (u.path.lstrip("/") or "omg-board")
        return BoardAddress(u.hostname, u.port or 22, u.username or os.environ.get("USER", "root"), root,
                            q.get("python", ["python3"])[0], q.get("key", [str(_home.client_key())])[0])  # fmt: skip
    raise ConfigError(f"board URL {url!r}: use emu://NAME or ssh://user@host:port/root")


class _Reject(paramiko.RejectPolicy):
    """RejectPolicy that remembers the key it refused, for the error message."""

    def __init__(self) -> None:
        self.refused: paramiko.PKey | None = None

    def missing_host_key(self, client, hostname, key):
        self.refused = key
        super().missing_host_key(client, hostname, key)


class Board:
    def __init__(
        self, url: str, *, timeout: float = 10.0, known_hosts: str | os.PathLike | None = None
    ):
        self.url = url
        self.addr = parse_url(url)
        self.timeout = timeout
        self.known_hosts = Path(known_hosts) if known_hosts else _home.known_hosts()
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # -- connection ----------------------------------------------------------
    def _socket(self) -> socket.socket:
        a = self.addr
        try:
            sock = socket.create_connection((a.host, a.port), timeout=self.timeout)
        except OSError as e:
            raise BoardUnreachableError(a.host, a.port, e.strerror or str(e), a.name) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return sock

    def open(self) -> Board:
        if self._client is not None:
            return self
        a = self.addr
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        policy = _Reject()
        client.set_missing_host_key_policy(policy)
        sock = self._socket()  # its own errors say what happened; not caught and wrapped below
        try:
            client.connect(a.host, a.port, username=a.user, key_filename=a.key, sock=sock,
                           timeout=self.timeout, banner_timeout=3 * self.timeout, auth_timeout=3 * self.timeout,
                           allow_agent=False, look_for_keys=False)  # fmt: skip
        except paramiko.BadHostKeyException as e:
            client.close()
            raise HostKeyChangedError(
                a.host, a.port, fingerprint(e.expected_key), fingerprint(e.key)
            ) from None
        except paramiko.AuthenticationException as e:
            client.close()
            if "timeout" in str(e).lower():  # a slow board, not a refused key
                raise BoardUnreachableError(
                    a.host,
                    a.port,
                    f"authentication timed out after {3 * self.timeout:.0f} s",
                    a.name,
                ) from None
            raise BoardAuthError(a.host, a.port, a.user, a.key) from None
        except paramiko.SSHException as e:
            client.close()
            if policy.refused is not None:
                raise UnknownHostKeyError(a.host, a.port, fingerprint(policy.refused)) from None
            raise BoardUnreachableError(a.host, a.port, f"SSH failed: {e}", a.name) from None
        except OSError as e:
            client.close()
            sock.close()
            raise BoardUnreachableError(a.host, a.port, e.strerror or str(e), a.name) from None
        client.get_transport().set_keepalive(15)
        self._client = client
        return self

    @property
    def client(self) -> paramiko.SSHClient:
        return self.open()._client

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
            self._sftp.get_channel().settimeout(self.timeout * 6)
        return self._sftp

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Board:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- commands ------------------------------------------------------------
    def command(self, cmd: str) -> str:
        """``cmd`` as run from the board directory with the known environment."""
        root = shlex.quote(self.addr.root)
        return (
            f"mkdir -p {root} && cd {root} || exit 97; "
            f'export OMG_BOARD_ROOT="$PWD" PYTHONDONTWRITEBYTECODE=1 LC_ALL=C.UTF-8 LANG=C.UTF-8; {cmd}'
        )

    def python(self, args: str) -> str:
        return self.command(f"{shlex.quote(self.addr.python)} {args}")

    def run(
        self, cmd: str, *, check: bool = True, timeout: float = 120.0, raw: bool = False
    ) -> tuple[int, str, str]:
        full = cmd if raw else self.command(cmd)
        _, out, err = self.client.exec_command(full, timeout=timeout)
        o = out.read().decode(errors="replace")
        e = err.read().decode(errors="replace")
        rc = out.channel.recv_exit_status()
        if check and rc != 0:
            raise RemoteCommandError(cmd, rc, e)
        return rc, o, e

    def exec_channel(self, cmd: str) -> paramiko.Channel:
        """A long-lived exec channel (for the board agent)."""
        chan = self.client.get_transport().open_session(timeout=self.timeout)
        chan.exec_command(self.command(cmd))
        return chan

    def sftp_path(self, rel: str) -> str:
        """A path for SFTP: the board directory joined with ``rel``."""
        return f"{self.addr.root.rstrip('/')}/{rel}" if self.addr.root not in ("", ".") else rel


def trust(url: str, *, known_hosts: str | os.PathLike | None = None, timeout: float = 10.0) -> str:
    """Fetch a board's host key and pin it (the explicit step). Returns its fingerprint."""
    a = parse_url(url)
    kh = Path(known_hosts) if known_hosts else _home.known_hosts()
    try:
        sock = socket.create_connection((a.host, a.port), timeout=timeout)
    except OSError as e:
        raise BoardUnreachableError(a.host, a.port, e.strerror or str(e), a.name) from None
    t = paramiko.Transport(sock)
    try:
        t.start_client(timeout=timeout)
        key = t.get_remote_server_key()
    finally:
        t.close()
    hk = paramiko.HostKeys(str(kh))
    hk.add(a.known_hosts_name, key.get_name(), key)
    hk.save(str(kh))
    return fingerprint(key)
