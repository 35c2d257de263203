"""The OP-TEE board's image, built from Debian: firmware (TF-A, OP-TEE OS, U-Boot) and guest.

``build_image()`` makes, or finds in its cache, everything an ``optee-qemu``
board boots; the recipe is ``board_setup/optee-qemu/`` (``pins.json``,
``make-vars.toml``, ``huk.c``, the guest's scripts; its README says what
each step does and gives the same recipe for a HiKey 960).

- **sources**: the ``optee-os`` and ``arm-trusted-firmware`` source
  packages, fetched with ``apt-get source`` under a private apt
  configuration (the machine's sources are never touched), every file
  checked against its SHA-256 in ``pins.json``; Debian's patches applied.
- **firmware**: OP-TEE OS for ``vexpress-qemu_armv8a`` that loads only TAs
  signed with the workbench's key (``home.ta_signing_key_optee()``), with
  the per-board hardware unique key hook (``huk.c``) and the hooks for our
  own additions: every ``ta/optee/pta/*.c`` becomes a pseudo-TA of the
  core (``core/pta/omg/``) and every ``ta/optee/patches/*.patch`` is
  applied with ``patch -p1``. Then TF-A (BL1 and the FIP, U-Boot from
  Debian's ``u-boot-qemu`` as BL33) and its ``fiptool``. The TA dev kit
  (``export-ta_arm64``) is kept: ``make -C ta/optee/ta
  TA_DEV_KIT_DIR=...``.
- **guest**: Debian bookworm arm64 packages (kernel, busybox, dropbear,
  sftp-server, tee-supplicant, python3.11) and numpy and cbor2 wheels: a
  small initramfs (busybox, the kernel modules) and a read-only ext4
  system image under a tmpfs overlay. Nothing imports TensorFlow.

Everything is cached under ``artifacts/optee-qemu/`` (``$OMG_OPTEE_ARTIFACTS``):
firmware by the hash of its inputs (pins, make variables, the HUK hook,
the TA public key, our pseudo-TAs and patches, U-Boot), the guest by its
pins and scripts, so a second build is a look-up. Each step prints a line
with its time.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from ..errors import BoardImageError, DownloadError
from ..util import atomic_write_bytes, atomic_write_text, sha256_file, write_secret

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "board_setup" / "optee-qemu"
PTA_DIR = REPO / "ta" / "optee" / "pta"
PATCH_DIR = REPO / "ta" / "optee" / "patches"
INCLUDE_DIR = REPO / "ta" / "optee" / "include"
#: bumped when the build itself changes in a way its inputs do not show
BUILD_VERSION = 3
#: what huk.c initializes the key with; replaced per board in tee-pager_v2.bin
HUK_MARKER = b"omgkit:huk-marker:5b1c7e0a93d24f"
#: builds kept in the cache per part (firmware, guest): a new TA key or recipe makes a new one
KEEP_BUILDS = 3
#: where TF-A's BL1 expects the FIP in the QEMU flash
FIP_OFFSET = 256 * 1024
#: the Debian packages the build runs on the host, per command or file they provide
HOST_NEEDS = {
    "qemu-system-aarch64": "qemu-system-arm",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
    "aarch64-linux-gnu-readelf": "binutils-aarch64-linux-gnu",
    "/usr/aarch64-linux-gnu/include/stdio.h": "libc6-dev-arm64-cross",
    "gcc": "gcc",
    "make": "make",
    "patch": "patch",
    "dtc": "device-tree-compiler",
    "mke2fs": "e2fsprogs",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
    "/usr/include/openssl/sha.h": "libssl-dev",
    "/usr/lib/u-boot/qemu_arm64/u-boot.bin": "u-boot-qemu",
}
SYSTEM_PYTHON = "/usr/bin/python3"  # OP-TEE's scripts: Debian's python3 with elftools, cryptography

Progress = Callable[[str], None]


def _say(msg: str) -> None:
    print(f"optee-qemu: {msg}", file=sys.stderr, flush=True)


def artifacts_root() -> Path:
    r = Path(os.environ.get("OMG_OPTEE_ARTIFACTS") or REPO / "artifacts" / "optee-qemu")
    r.mkdir(parents=True, exist_ok=True)
    return r.resolve()


def pins() -> dict:
    return json.loads((RECIPE / "pins.json").read_text())


def make_vars() -> dict:
    return tomllib.loads((RECIPE / "make-vars.toml").read_text())


# -- small helpers -------------------------------------------------------------------------


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "big") + b)
    return h.hexdigest()[:16]


def _files_digest(paths: list[Path]) -> list[bytes | str]:
    out: list[bytes | str] = []
    for p in sorted(paths):
        out += [p.name, p.read_bytes()]
    return out


def _env() -> dict[str, str]:
    """Debian's python3 first on PATH (the venv's python shadows it and lacks elftools)."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    env["PATH"] = "/usr/bin:/bin:/usr/sbin:/sbin:" + env.get("PATH", "")
    env["LC_ALL"] = "C"
    # the sources unpack inside the workbench's git tree: the builds must not describe it as their version
    env["GIT_CEILING_DIRECTORIES"] = str(artifacts_root())
    return env


def _run(
    cmd: list[str], step: str, log: Path, *, cwd: Path | None = None, timeout: float = 3600
) -> None:
    """Run a build command, its output appended to ``log``; one clear error if it fails."""
    with open(log, "ab") as f:
        f.write(f"\n$ {' '.join(cmd)}\n".encode())
        f.flush()
        try:
            r = subprocess.run(
                cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=_env(), timeout=timeout
            )
        except FileNotFoundError:
            raise BoardImageError(
                f"{step}: {cmd[0]} is not installed (python3 tools/sysdeps.py optee)"
            ) from None
        except subprocess.TimeoutExpired:
            raise BoardImageError(f"{step} took more than {timeout:.0f} s; see {log}") from None
    if r.returncode != 0:
        raise BoardImageError(
            f"{step} failed (exit {r.returncode}): {_first_error(log)} — full log: {log}"
        )


def _first_error(log: Path) -> str:
    """The line of a build log that says what went wrong (a compiler's error, else the last line)."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines()[-400:] if ln.strip()]
    for pat in (r": (fatal )?error: ", r"^E: ", r"\*\*\* ", r"(?i)error"):
        hits = [ln for ln in lines if re.search(pat, ln) and len(ln) < 600]
        if hits:
            return hits[0][:300]
    return lines[-1][:300] if lines else ""


class _Steps:
    """Progress lines: each step and its time."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def __call__(self, what: str):
        steps = self

        class _Step:
            def __enter__(self):
                self.t = time.perf_counter()
                return self

            def __exit__(self, et, *_):
                if et is None:
                    steps.progress(f"{what} ({time.perf_counter() - self.t:.1f} s)")

        return _Step()


def check_host() -> None:
    """The host tools the build needs, or one error naming the Debian packages to install."""
    missing = sorted({pkg for need, pkg in HOST_NEEDS.items()
                      if not (Path(need).exists() if need.startswith("/") else shutil.which(need))})  # fmt: skip
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import elftools, cryptography"], capture_output=True)
    if r.returncode != 0:
        missing += ["python3-pyelftools", "python3-cryptography"]
    if missing:
        raise BoardImageError(
            f"the OP-TEE board needs Debian packages that are missing: {' '.join(missing)}; "
            "install them with `sudo python3 tools/sysdeps.py optee` (or apt-get install)"
        )


# -- apt, privately ----------------------------------------------------------------------------


def _apt_dir(name: str, sources: str) -> Path:
    d = artifacts_root() / "apt" / name
    (d / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (d / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    if not (d / "sources.list").is_file() or (d / "sources.list").read_text() != sources:
        atomic_write_text(d / "sources.list", sources)
        (d / "updated").unlink(missing_ok=True)
    return d


def _apt(
    d: Path,
    args: list[str],
    log: Path,
    step: str,
    *,
    arch: str | None = None,
    cwd: Path | None = None,
) -> None:
    cmd = ["apt-get", "-q", "-y",
           "-o", f"Dir::Etc::sourcelist={d / 'sources.list'}", "-o", "Dir::Etc::sourceparts=-",
           "-o", f"Dir::State::Lists={d / 'lists'}", "-o", f"Dir::Cache={d / 'cache'}",
           "-o", "Dir::Etc::preferences=/dev/null", "-o", "Dir::Etc::preferencesparts=-",
           "-o", "Dir::State::status=/dev/null", "-o", "Debug::NoLocking=1"]  # fmt: skip
    if os.geteuid() == 0:
        cmd += ["-o", "APT::Sandbox::User=root"]
    if arch:
        cmd += ["-o", f"APT::Architecture={arch}", "-o", f"APT::Architectures={arch}"]
    _run(cmd + args, step, log, cwd=cwd, timeout=1800)


def _apt_update(d: Path, log: Path, *, arch: str | None = None, max_age: float = 6 * 3600) -> None:
    stamp = d / "updated"
    if stamp.is_file() and time.time() - stamp.stat().st_mtime < max_age:
        return
    _apt(d, ["update"], log, "apt-get update (private lists)", arch=arch)
    stamp.write_text("")


# -- sources -----------------------------------------------------------------------------------


def fetch_sources(log: Path) -> dict[str, Path]:
    """The pinned source files, fetched once into ``sources/`` and checked every time."""
    store = artifacts_root() / "sources"
    store.mkdir(exist_ok=True)
    P = pins()
    todo = {name: pin for name, pin in P["sources"].items()
            if any(not (store / f).is_file() or sha256_file(store / f) != h for f, h in pin["files"].items())}  # fmt: skip
    if todo:
        suites = sorted({s for pin in todo.values() for s in pin["suites"]})
        key = P["guest"]["keyring"]
        lines = "".join(
            f"deb-src [signed-by={key}] {P['guest']['archive']} {s} main\n" for s in suites
        )
        d = _apt_dir("sources", lines)
        _apt_update(d, log)
        for name, pin in todo.items():
            with tempfile.TemporaryDirectory(dir=store) as tmp:
                try:
                    _apt(d, ["source", "--download-only", f"{name}={pin['version']}"], log,
                         f"apt-get source {name}={pin['version']}", cwd=Path(tmp))  # fmt: skip
                except BoardImageError:
                    raise BoardImageError(
                        f"Debian no longer offers {name} {pin['version']} in {', '.join(pin['suites'])}; "
                        f"update board_setup/optee-qemu/pins.json (version and sha256), see {log}"
                    ) from None
                for f in pin["files"]:
                    if not (Path(tmp) / f).is_file():
                        raise DownloadError(
                            f"{name} {pin['version']}: apt did not fetch {f}; see {log}"
                        )
                    os.replace(Path(tmp) / f, store / f)
    out = {}
    for pin in P["sources"].values():
        for f, h in pin["files"].items():
            got = sha256_file(store / f)
            if got != h:
                (store / f).unlink()
                raise DownloadError(
                    f"{f}: sha256 {got} is not the pinned {h} (removed; the next build fetches it again)"
                )
            out[f] = store / f
    return out


def _unpack_source(name: str, files: dict[str, Path], into: Path, log: Path) -> Path:
    """The orig tarball, Debian's directory over it, and Debian's patches applied (quilt order)."""
    pin = pins()["sources"][name]
    orig = next(f for f in pin["files"] if ".orig." in f)
    deb = next(f for f in pin["files"] if ".debian." in f)
    _run(["tar", "-xf", str(files[orig]), "-C", str(into)], f"unpack {orig}", log)
    src = into / pin["dir"]
    _run(["tar", "-xf", str(files[deb]), "-C", str(src)], f"unpack {deb}", log)
    series = src / "debian" / "patches" / "series"
    if series.is_file():
        for line in series.read_text().splitlines():
            parts = line.split("#", 1)[0].split()
            if not parts:
                continue
            strip = next((p for p in parts[1:] if p.startswith("-p")), "-p1")
            _run(["patch", strip, "--batch", "--forward", "-i", str(src / "debian" / "patches" / parts[0])],
                 f"{name}: Debian patch {parts[0]}", log, cwd=src)  # fmt: skip
    return src


# -- firmware ----------------------------------------------------------------------------------


def _our_additions() -> tuple[list[Path], list[Path], list[Path]]:
    ptas = sorted(PTA_DIR.glob("*.c")) if PTA_DIR.is_dir() else []
    headers = sorted(PTA_DIR.glob("*.h")) if PTA_DIR.is_dir() else []
    if ptas:
        headers += sorted(INCLUDE_DIR.glob("*.h"))
    patches = sorted(PATCH_DIR.glob("*.patch")) if PATCH_DIR.is_dir() else []
    return ptas, headers, patches


def firmware_key(ta_public_pem: bytes) -> str:
    P = pins()
    ptas, headers, patches = _our_additions()
    uboot = Path(P["host"]["u-boot"])
    return _digest(str(BUILD_VERSION), json.dumps(P["sources"], sort_keys=True), json.dumps(P["host"], sort_keys=True),
                   (RECIPE / "make-vars.toml").read_bytes(), (RECIPE / "huk.c").read_bytes(), ta_public_pem,
                   (RECIPE / "u-boot.env").read_bytes(),
                   uboot.read_bytes() if uboot.is_file() else b"",
                   "pta", *_files_digest(ptas), "h", *_files_digest(headers), "patches", *_files_digest(patches))  # fmt: skip


def _publish(stage: Path, out: Path, manifest: dict, *, work: Path, log: Path, what: str,
             progress: Progress) -> Path:  # fmt: skip
    """A finished build into the cache: its manifest last, then one rename; old builds pruned."""
    atomic_write_text(stage / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(stage, out)
    shutil.copy(log, out / "build.log")
    shutil.rmtree(work, ignore_errors=True)
    _prune(out.parent, KEEP_BUILDS)
    progress(f"{what} ready in {manifest['seconds']:.0f} s: {out}")
    return out


def _used(p: Path) -> float:
    u = p / "last_used"
    return (u if u.is_file() else p / "manifest.json").stat().st_mtime


def _hit(out: Path) -> Path:
    """A cache hit: remember when the build was last used (pruning spares recent ones)."""
    (out / "last_used").touch()
    return out


def _prune(d: Path, keep: int) -> None:
    """Remove builds beyond the ``keep`` most recently used ones that nobody used for two days
    (each test session signs with a new key: its firmware is a build of its own)."""
    builds = sorted(
        (p for p in d.iterdir() if (p / "manifest.json").is_file()), key=_used, reverse=True
    )
    for p in builds[keep:]:
        if time.time() - _used(p) > 2 * 86400:
            shutil.rmtree(p, ignore_errors=True)


def _work_dir(kind: str, key: str) -> Path:
    """A fresh build directory; those of failed builds (kept for their logs) go after an hour."""
    root = artifacts_root() / "work"
    root.mkdir(exist_ok=True)
    for old in root.iterdir():
        if time.time() - old.stat().st_mtime > 3600:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{kind}-{key}-", dir=root))


def _upstream(debian_version: str) -> str:
    """4.10.0-2 -> 4.10.0; 2.12.1+dfsg-1 -> 2.12.1"""
    return re.split(r"[-+~]", debian_version.split(":")[-1])[0]


def _mk(vars_: dict) -> list[str]:
    return [f"{k}={v}" for k, v in vars_.items()]


def build_firmware(ta_public_pem: bytes, progress: Progress = _say) -> Path:
    """OP-TEE OS + TF-A for QEMU, signed-TA key built in; cached by the hash of every input."""
    key = firmware_key(ta_public_pem)
    out = artifacts_root() / "firmware" / key
    if (out / "manifest.json").is_file():
        return _hit(out)
    check_host()
    step = _Steps(progress)
    t0 = time.perf_counter()
    P, V = pins(), make_vars()
    cc = P["host"]["cross_compile"]
    work = _work_dir("firmware", key)
    log = work / "build.log"
    progress(f"building the firmware {key} in {work} (log: {log})")
    with step("sources: optee-os and arm-trusted-firmware from Debian, sha256 checked"):
        files = fetch_sources(log)
    with step("unpack and apply Debian's patches"):
        optee = _unpack_source("optee-os", files, work, log)
        atf = _unpack_source("arm-trusted-firmware", files, work, log)
    ptas, headers, patches = _our_additions()
    with step(
        f"our additions: HUK hook, {len(ptas)} pseudo-TA source(s), {len(patches)} patch(es)"
    ):
        d = optee / "core" / "omg"
        d.mkdir()
        shutil.copy(RECIPE / "huk.c", d / "omg_huk.c")
        (d / "sub.mk").write_text("srcs-y += omg_huk.c\n")
        with open(optee / "core" / "sub.mk", "a") as f:
            f.write("\n# omgkit: a hardware unique key per board\nsubdirs-y += omg\n")
        if ptas:
            d = optee / "core" / "pta" / "omg"
            d.mkdir()
            for p in ptas + headers:
                shutil.copy(p, d / p.name)
            defines = V.get("pta", {}).get("defines", {})
            (d / "omg_build.h").write_text(
                "".join(f"#define {k} {v}\n" for k, v in defines.items())
            )
            (d / "sub.mk").write_text("incdirs-y += .\ncppflags-y += -include omg_build.h\n"
                                      + "".join(f"srcs-y += {p.name}\n" for p in ptas))  # fmt: skip
            with open(optee / "core" / "pta" / "sub.mk", "a") as f:
                f.write("\n# omgkit: our pseudo-TAs (ta/optee/pta)\nsubdirs-y += omg\n")
        for p in patches:
            _run(
                ["patch", "-p1", "--batch", "--forward", "-i", str(p)],
                f"patch {p.name}",
                log,
                cwd=optee,
            )
    pub = work / "ta_public_key.pem"
    pub.write_bytes(ta_public_pem)
    oo = work / "optee-out"
    jobs = f"-j{os.cpu_count() or 2}"
    with step("OP-TEE OS (vexpress-qemu_armv8a), TAs signed with the workbench's key only"):
        _run(["make", "-C", str(optee), jobs, f"O={oo}", f"CROSS_COMPILE={cc}", f"CROSS_COMPILE_core={cc}",
              f"CROSS_COMPILE_ta_arm64={cc}", f"TA_PUBLIC_KEY={pub}", f"PYTHON3={SYSTEM_PYTHON}",
              f"TEE_IMPL_VERSION={_upstream(P['sources']['optee-os']['version'])}",
              *_mk(V["optee_os"]), "all"], "building OP-TEE OS", log)  # fmt: skip
    core = oo / "core"
    pager = (core / "tee-pager_v2.bin").read_bytes()
    if pager.count(HUK_MARKER) != 1:
        raise BoardImageError(
            f"the HUK marker occurs {pager.count(HUK_MARKER)} times in tee-pager_v2.bin, not once"
        )
    ab = work / "tf-a-build"
    with step("TF-A (BL1 and the FIP: BL2, BL31, OP-TEE as BL32, U-Boot as BL33) and fiptool"):
        _run(["make", "-C", str(atf), jobs, f"CROSS_COMPILE={cc}", f"BUILD_BASE={ab}",
              f"BL32={core / 'tee-header_v2.bin'}", f"BL32_EXTRA1={core / 'tee-pager_v2.bin'}",
              f"BL32_EXTRA2={core / 'tee-pageable_v2.bin'}", f"BL33={P['host']['u-boot']}",
              f"BUILD_STRING=debian-{P['sources']['arm-trusted-firmware']['version']}",
              *_mk(V["tf_a"]), "all", "fip"], "building TF-A", log)  # fmt: skip
    rel = ab / V["tf_a"]["PLAT"] / "release"
    stage = work / "out"
    stage.mkdir()
    for f in ("bl1.bin", "fip.bin"):
        shutil.copy(rel / f, stage / f)
    for f in ("tee-header_v2.bin", "tee-pager_v2.bin", "tee-pageable_v2.bin", "tee.elf"):
        shutil.copy(core / f, stage / f)
    shutil.copy(atf / "tools" / "fiptool" / "fiptool", stage / "fiptool")
    uboot_env_image(RECIPE / "u-boot.env", stage / "u-boot-env.img")
    shutil.copytree(oo / "export-ta_arm64", stage / "export-ta_arm64", symlinks=True)
    manifest = {
        "key": key, "build_version": BUILD_VERSION, "optee_os": P["sources"]["optee-os"]["version"],
        "arm_trusted_firmware": P["sources"]["arm-trusted-firmware"]["version"],
        "u_boot": P["host"]["u-boot"], "u_boot_sha256": sha256_file(P["host"]["u-boot"]),
        "ta_public_key_sha256": hashlib.sha256(ta_public_pem).hexdigest(),
        "pseudo_tas": [p.name for p in ptas], "patches": [p.name for p in patches],
        "huk_offset": pager.index(HUK_MARKER), "make_vars": V,
        "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    return _publish(
        stage, out, manifest, work=work, log=log, what=f"firmware {key}", progress=progress
    )


def uboot_env_image(text_file: Path, out: Path) -> None:
    """QEMU's second flash (64 MiB, sparse) holding a U-Boot environment (``CONFIG_ENV_ADDR``
    0x4000000 = the start of that flash, ``CONFIG_ENV_SIZE`` 0x40000 in Debian's qemu_arm64):
    a CRC-32 of the data, then ``key=value`` strings, each NUL-terminated, and a final NUL."""
    lines = [
        ln.strip()
        for ln in text_file.read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    data = b"".join(ln.encode() + b"\0" for ln in lines) + b"\0"
    size = 0x40000
    if len(data) > size - 4:
        raise BoardImageError(
            f"{text_file}: the U-Boot environment is larger than {size - 4} bytes"
        )
    data += b"\0" * (size - 4 - len(data))
    with open(out, "wb") as f:
        f.write(struct.pack("<I", zlib.crc32(data)) + data)
        f.truncate(64 << 20)


def board_flash(firmware: Path, huk: bytes, out: Path) -> None:
    """The board's flash: BL1, and the FIP whose OP-TEE carries this board's HUK (written 0600).

    The marker in ``tee-pager_v2.bin`` is replaced by ``huk`` and the FIP
    repacked with TF-A's ``fiptool`` (BL32 is not signed without trusted
    board boot). Done at every ``up``: a firmware rebuilt for a new
    pseudo-TA keeps the board's key.
    """
    if len(huk) != 32 or HUK_MARKER[:18] == huk[:18]:
        raise BoardImageError("a board's HUK is 32 random bytes")
    pager = (firmware / "tee-pager_v2.bin").read_bytes()
    i = pager.find(HUK_MARKER)
    if i < 0 or pager.count(HUK_MARKER) != 1:
        raise BoardImageError(
            f"{firmware}: no unique HUK marker in tee-pager_v2.bin; rebuild the firmware"
        )
    with tempfile.TemporaryDirectory(prefix="omg-flash-") as tmp:  # 0700
        t = Path(tmp)
        write_secret(t / "pager.bin", pager[:i] + huk + pager[i + 32 :])
        r = subprocess.run([str(firmware / "fiptool"), "update", "--tos-fw-extra1", str(t / "pager.bin"),
                            "--out", str(t / "fip.bin"), str(firmware / "fip.bin")],
                           capture_output=True, text=True)  # fmt: skip
        if r.returncode != 0:
            raise BoardImageError(f"fiptool update failed: {r.stderr.strip()[-300:]}")
        fip = (t / "fip.bin").read_bytes()
    if HUK_MARKER in fip or huk not in fip:
        raise BoardImageError("the repacked FIP does not carry the board's HUK")
    bl1 = (firmware / "bl1.bin").read_bytes()
    if len(bl1) > FIP_OFFSET:
        raise BoardImageError(f"bl1.bin is {len(bl1)} bytes, more than the FIP offset {FIP_OFFSET}")
    write_secret(out, bl1 + b"\0" * (FIP_OFFSET - len(bl1)) + fip)


# -- guest -------------------------------------------------------------------------------------

GUEST_FILES = ("init", "rc", "inittab", "shutdown", "omg-python")
#: parts of Debian packages a board never uses
_PRUNE = ("usr/share/doc/", "usr/share/man/", "usr/share/info/", "usr/share/lintian/", "usr/share/locale/",
          "usr/share/bug/", "usr/lib/systemd/", "etc/systemd/", "etc/init.d/", "usr/share/bash-completion/",
          "usr/lib/python3.11/test/", "usr/lib/python3.11/idlelib/", "usr/lib/python3.11/tkinter/",
          "usr/lib/python3.11/turtledemo/", "usr/lib/python3.11/ensurepip/", "usr/lib/python3.11/lib2to3/tests/",
          "usr/share/python3/", "usr/share/binfmts/", "usr/share/gdb/")  # fmt: skip


def _board_txt_pins(names: list[str]) -> list[str]:
    pins_ = {}
    for line in (REPO / "requirements" / "board.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if m:
            pins_[m.group(1).lower()] = m.group(2)
    missing = [n for n in names if n.lower() not in pins_]
    if missing:
        raise BoardImageError(f"requirements/board.txt pins no version of {', '.join(missing)}")
    return [f"{n}=={pins_[n.lower()]}" for n in names]


def guest_key() -> str:
    P = pins()
    return _digest(str(BUILD_VERSION), json.dumps(P["guest"], sort_keys=True), json.dumps(P["wheels"], sort_keys=True),
                   *_board_txt_pins(P["wheels"]["from_board_txt"]),
                   *[x for f in GUEST_FILES for x in (f, (RECIPE / f).read_bytes())])  # fmt: skip


def _guest_apt() -> Path:
    g = pins()["guest"]
    opt = f"[arch=arm64 signed-by={g['keyring']}]"
    lines = (f"deb {opt} {g['archive']} {g['suite']} main\n"
             f"deb {opt} {g['archive']} {g['suite']}-updates main\n"
             f"deb {opt} {g['security']} {g['suite']}-security main\n")  # fmt: skip
    return _apt_dir("arm64", lines)


def download_debs(packages: list[str], log: Path) -> dict[str, Path]:
    """arm64 packages from Debian (apt checks each against the signed index): name -> .deb."""
    d = _guest_apt()
    _apt_update(d, log, arch="arm64")
    store = artifacts_root() / "debs"
    store.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store) as tmp:
        _apt(d, ["download", *packages], log, f"apt-get download of {len(packages)} arm64 packages", arch="arm64",
             cwd=Path(tmp))  # fmt: skip
        got = {}
        for f in Path(tmp).glob("*.deb"):
            name = f.name.split("_", 1)[0]
            os.replace(f, store / f.name)
            got[name] = store / f.name
    missing = [p for p in packages if p not in got]
    if missing:
        raise BoardImageError(f"apt did not download {', '.join(missing)}; see {log}")
    return got


def _deb_field(deb: Path, field: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True, check=True
    ).stdout.strip()


def _usr(name: str) -> str | None:
    """A package member's path in the merged-/usr tree, or None to leave it out."""
    n = name[2:] if name.startswith("./") else name.lstrip("/")
    n = n.rstrip("/")
    if not n:
        return None
    top, _, rest = n.partition("/")
    if top in ("bin", "sbin", "lib"):
        if not rest:
            return None  # the top-level directory itself: a symlink into /usr
        n = f"usr/{top}/{rest}"
    if n.startswith(("boot", "usr/lib/modules", "usr/lib/linux")) or any(
        (n + "/").startswith(p) for p in _PRUNE
    ):
        return None
    return n


def _extract_deb(deb: Path, root: Path) -> list[str]:
    """Unpack a .deb's files into ``root``, merged /usr; returns the paths written."""
    data = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    written = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf.getmembers():
            rel = _usr(m.name)
            if rel is None:
                continue
            dst = root / rel
            if m.isdir():
                dst.mkdir(parents=True, exist_ok=True)
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_symlink() or dst.exists():
                if dst.is_dir() and not dst.is_symlink():
                    continue
                dst.unlink()
            if m.issym():
                os.symlink(m.linkname, dst)
            elif m.islnk():
                src = _usr(m.linkname)
                if src and (root / src).exists():
                    shutil.copy2(root / src, dst)
            elif m.isfile():
                with tf.extractfile(m) as src_f, open(dst, "wb") as out:
                    shutil.copyfileobj(src_f, out)
                os.chmod(dst, m.mode & 0o755 | 0o644)
                os.utime(dst, (m.mtime, m.mtime))
            else:
                continue
            written.append(rel)
    return written


def _modinfo(ko: bytes) -> dict[str, list[str]]:
    """The ``.modinfo`` section of a 64-bit little-endian kernel module."""
    if ko[:4] != b"\x7fELF" or ko[4] != 2:
        raise BoardImageError("not a 64-bit kernel module")
    (shoff,) = struct.unpack_from("<Q", ko, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x3A)
    secs = [struct.unpack_from("<IIQQQQ", ko, shoff + i * shentsize) for i in range(shnum)]
    stroff = secs[shstrndx][4]
    out: dict[str, list[str]] = {}
    for name, _type, _flags, _addr, off, size in secs:
        nm = ko[stroff + name : ko.index(b"\0", stroff + name)]
        if nm == b".modinfo":
            for item in ko[off : off + size].split(b"\0"):
                k, sep, v = item.decode(errors="replace").partition("=")
                if sep:
                    out.setdefault(k, []).append(v)
    return out


def _modules(kroot: Path, kver: str, wanted: list[str]) -> tuple[list[str], dict[str, str]]:
    """The modules ``wanted`` and all they need, in load order; and name -> path under lib/modules/KVER."""
    base = kroot / "lib" / "modules" / kver
    builtin = set()
    if (base / "modules.builtin").is_file():
        builtin = {
            Path(x).name.split(".")[0].replace("-", "_")
            for x in (base / "modules.builtin").read_text().split()
        }
    paths, infos, alias = {}, {}, {}
    for ko in base.rglob("*.ko"):
        name = ko.name[:-3].replace("-", "_")
        paths[name] = ko.relative_to(base).as_posix()
        infos[name] = None
        alias[name] = name
    order: list[str] = []

    def info(name: str) -> dict[str, list[str]]:
        if infos[name] is None:
            infos[name] = _modinfo((base / paths[name]).read_bytes())
        return infos[name]

    def resolve(name: str) -> str | None:
        n = name.replace("-", "_")
        if n in paths:
            return n
        if n in builtin:
            return None
        for m in paths:  # an alias (softdeps name algorithms: crc32c -> crc32c_generic)
            if any(a.replace("-", "_") in (n, f"crypto_{n}") for a in info(m).get("alias", [])):
                return m
        return None

    def visit(name: str, stack: tuple[str, ...] = ()) -> None:
        if name in order or name in stack:
            return
        i = info(name)
        deps = [d for x in i.get("depends", []) for d in x.split(",") if d]
        soft = [w for x in i.get("softdep", []) for w in x.split() if not w.endswith(":")]
        for d in deps:
            r = resolve(d)
            if r is None and d.replace("-", "_") not in builtin:
                raise BoardImageError(f"kernel module {name} needs {d}, which {kver} does not have")
            if r:
                visit(r, stack + (name,))
        for d in soft:
            r = resolve(d)
            if r:
                visit(r, stack + (name,))
        order.append(name)

    for w in wanted:
        r = resolve(w)
        if r is None:
            if w.replace("-", "_") in builtin:
                continue
            raise BoardImageError(f"kernel {kver} has no module {w}")
        visit(r)
    return order, paths


def _cpio(entries: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """A newc cpio archive: (name, mode, data or link target, (rdev major, minor)), owner root."""
    out = io.BytesIO()

    def pad(n: int) -> None:
        out.write(b"\0" * ((4 - n % 4) % 4))

    for ino, (name, mode, data, (maj, mi)) in enumerate(
        entries + [("TRAILER!!!", 0, b"", (0, 0))], start=1
    ):
        nm = name.encode() + b"\0"
        hdr = "070701" + "".join(
            f"{v:08X}" for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, maj, mi, len(nm), 0)
        )
        out.write(hdr.encode() + nm)
        pad(110 + len(nm))
        out.write(data)
        pad(len(data))
    return out.getvalue()


def _elf_closure(root: Path, log: Path) -> None:
    """Every shared library an ELF file of the image needs is in the image."""
    elves = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            with open(p, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    elves.append(p)
    have = {p.name for p in root.rglob("*.so*")} | {p.name for p in root.rglob("ld-linux*")}
    missing: dict[str, set[str]] = {}
    for i in range(0, len(elves), 200):
        r = subprocess.run(["aarch64-linux-gnu-readelf", "-d", "-W", *map(str, elves[i : i + 200])],
                           capture_output=True, text=True)  # fmt: skip
        cur = ""
        for line in r.stdout.splitlines():
            if line.startswith("File: "):
                cur = line[6:].strip()
            m = re.search(r"\(NEEDED\)\s+Shared library: \[(.+)\]", line)
            if m and m.group(1) not in have:
                missing.setdefault(m.group(1), set()).add(str(Path(cur).relative_to(root)))
    if missing:
        what = "; ".join(
            f"{k} (for {', '.join(sorted(v)[:3])})" for k, v in sorted(missing.items())
        )
        raise BoardImageError(
            f"the guest lacks shared libraries: {what}; add their packages to pins.json's guest.packages"
        )


def _wheels(log: Path) -> list[Path]:
    W = pins()["wheels"]
    reqs = _board_txt_pins(W["from_board_txt"])
    store = artifacts_root() / "wheels"
    store.mkdir(exist_ok=True)
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
          *[x for p in W["platforms"] for x in ("--platform", p)], "--python-version", W["python_version"],
          "--implementation", "cp",
          "-d", str(store), *reqs], "pip download (aarch64 wheels): " + " ".join(reqs), log)  # fmt: skip
    out = []
    for r in reqs:
        name, ver = r.split("==")
        hits = [w for w in store.glob("*.whl")
                if w.name.split("-")[0].lower().replace("_", "-") == name.lower() and w.name.split("-")[1] == ver
                and ("aarch64" in w.name or w.name.endswith("-none-any.whl"))]  # fmt: skip
        if not hits:
            raise BoardImageError(f"pip gave no aarch64 wheel of {r}")
        out.append(sorted(hits)[-1])
    return out


def _install_wheel(whl: Path, site: Path) -> None:
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            n = info.filename
            if info.is_dir():
                continue
            if ".data/" in n.split("/", 1)[0] + "/":
                kind, _, rest = n.split("/", 1)[1].partition("/")
                if kind not in ("purelib", "platlib"):
                    continue
                n = rest
            dst = site / n
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(z.read(info))


def _compile(root: Path, dirs: list[str]) -> None:
    """Byte-compile for the guest's python3.11 (same magic number as the host's 3.11): it never compiles at run time."""
    import compileall
    import py_compile

    if sys.version_info[:2] != (3, 11):
        raise BoardImageError(
            "the guest image is byte-compiled with Python 3.11; run the build with 3.11"
        )
    for d in dirs:
        compileall.compile_dir(str(root / d), ddir="/" + d, quiet=2, workers=os.cpu_count() or 1,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)  # fmt: skip


def _dir_size(root: Path) -> int:
    return sum((p.lstat().st_size + 4095) // 4096 * 4096 + 256 for p in root.rglob("*"))


def mkfs(staging: Path, image: Path, label: str, size_mb: int, log: Path) -> None:
    """An ext4 image of ``staging`` (``mke2fs -d``), root-owned at its top, written then renamed."""
    tmp = image.with_name(image.name + ".tmp")
    tmp.unlink(missing_ok=True)
    _run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-m", "0", "-E", "root_owner=0:0",
          "-d", str(staging), str(tmp), f"{size_mb}M"], f"mke2fs {image.name}", log)  # fmt: skip
    os.replace(tmp, image)


def build_guest(progress: Progress = _say) -> Path:
    """The kernel, the initramfs and the read-only system image; cached by the pins and the scripts."""
    key = guest_key()
    out = artifacts_root() / "guest" / key
    if (out / "manifest.json").is_file():
        return _hit(out)
    check_host()
    step = _Steps(progress)
    t0 = time.perf_counter()
    P = pins()
    G = P["guest"]
    work = _work_dir("guest", key)
    log = work / "build.log"
    progress(f"building the guest {key} in {work} (log: {log})")
    with step(
        f"Debian {G['suite']} arm64 packages ({len(G['packages']) + 2} + {len(G['build_only'])} for building)"
    ):
        debs = download_debs([G["kernel"], *G["packages"], *G["build_only"]], log)
        kpkg = re.match(r"(linux-image-\S+)", _deb_field(debs[G["kernel"]], "Depends")).group(1)
        debs.update(download_debs([kpkg], log))
    versions = {n: _deb_field(p, "Version") for n, p in sorted(debs.items())}
    root = work / "system"
    with step("the system tree: packages unpacked into merged /usr, numpy and cbor2 wheels"):
        root.mkdir()
        for top in ("bin", "sbin", "lib"):
            os.symlink(f"usr/{top}", root / top)
        for n in G["packages"]:
            _extract_deb(debs[n], root)
        site = root / "usr" / "lib" / "python3" / "dist-packages"
        site.mkdir(parents=True, exist_ok=True)
        wheels = _wheels(log)
        for w in wheels:
            _install_wheel(w, site)
        _system_files(root)
    with step("byte-compile the standard library and the wheels (python3.11)"):
        _compile(root, ["usr/lib/python3.11", "usr/lib/python3/dist-packages"])
    with step("every ELF file's libraries are in the image"):
        _elf_closure(root, log)
    kroot = work / "kernel"
    with step(f"kernel {kpkg}: Image and modules"):
        kroot.mkdir()
        _run(["dpkg-deb", "-x", str(debs[kpkg]), str(kroot)], f"unpack {kpkg}", log)
        kver = kpkg.removeprefix("linux-image-")
        vmlinuz = kroot / "boot" / f"vmlinuz-{kver}"
        raw = vmlinuz.read_bytes()
        image = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        order, paths = _modules(kroot, kver, G["modules"])
    stage = work / "out"
    stage.mkdir()
    atomic_write_bytes(stage / "Image", image)
    with step(f"initramfs: busybox and {len(order)} modules ({', '.join(order)})"):
        bb = (root / "usr" / "bin" / "busybox").read_bytes()
        entries: list[tuple[str, int, bytes, tuple[int, int]]] = []
        for d in (
            "bin",
            "dev",
            "etc",
            "lib",
            "lib/modules",
            f"lib/modules/{kver}",
            "proc",
            "sys",
            "newroot",
            "run",
        ):
            entries.append((d, stat.S_IFDIR | 0o755, b"", (0, 0)))
        entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)))
        entries.append(("bin/busybox", stat.S_IFREG | 0o755, bb, (0, 0)))
        entries.append(("bin/sh", stat.S_IFLNK | 0o777, b"busybox", (0, 0)))
        entries.append(("init", stat.S_IFREG | 0o755, (RECIPE / "init").read_bytes(), (0, 0)))
        entries.append(
            ("etc/omg-modules", stat.S_IFREG | 0o644, "\n".join(order).encode() + b"\n", (0, 0))
        )
        dirs, dep = set(), []
        kbase = kroot / "lib" / "modules" / kver
        for name in order:
            rel = paths[name]
            parts = Path(rel).parts
            for i in range(1, len(parts)):
                dd = f"lib/modules/{kver}/" + "/".join(parts[:i])
                if dd not in dirs:
                    dirs.add(dd)
                    entries.append((dd, stat.S_IFDIR | 0o755, b"", (0, 0)))
            entries.append(
                (
                    f"lib/modules/{kver}/{rel}",
                    stat.S_IFREG | 0o644,
                    (kbase / rel).read_bytes(),
                    (0, 0),
                )
            )
            deps = _deps_of(name, order, paths, kbase)
            dep.append(f"{rel}: {' '.join(paths[d] for d in reversed(deps))}".rstrip())
        entries.append((f"lib/modules/{kver}/modules.dep", stat.S_IFREG | 0o644, ("\n".join(dep) + "\n").encode(),
                        (0, 0)))  # fmt: skip
        atomic_write_bytes(stage / "initramfs.cpio.gz", gzip.compress(_cpio(entries), 6, mtime=0))
    with step("the system image (read-only ext4)"):
        size_mb = int(_dir_size(root) * 1.1 / 2**20) + 48
        mkfs(root, stage / "system.img", "omg-system", size_mb, log)
    # headers and the client library for building normal-world programs against libteec
    dev = stage / "sysroot"
    dev.mkdir()
    for n in G["build_only"] + ["libteec1"]:
        _extract_deb(debs[n], dev)
    manifest = {
        "key": key, "build_version": BUILD_VERSION, "kernel": kver, "modules": order, "packages": versions,
        "wheels": [w.name for w in wheels], "sizes": {f: (stage / f).stat().st_size for f in
                                                      ("Image", "initramfs.cpio.gz", "system.img")},
        "system_bytes_used": _dir_size(root), "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    return _publish(
        stage, out, manifest, work=work, log=log, what=f"guest {key}", progress=progress
    )


def _deps_of(name: str, order: list[str], paths: dict[str, str], kbase: Path) -> list[str]:
    """The modules ``name`` needs (hard dependencies, transitively), in load order."""
    need: set[str] = set()
    todo = [name]
    while todo:
        n = todo.pop()
        for x in _modinfo((kbase / paths[n]).read_bytes()).get("depends", []):
            for d in filter(None, x.split(",")):
                d = d.replace("-", "_")
                if d in paths and d not in need:
                    need.add(d)
                    todo.append(d)
    return [m for m in order if m in need]


def _system_files(root: Path) -> None:
    """Our files on the system image: init, the services, root's home on /data, the board's python."""
    etc = root / "etc"
    (etc / "omg").mkdir(parents=True, exist_ok=True)
    for f, dst, mode in (("inittab", "etc/inittab", 0o644), ("rc", "etc/omg/rc", 0o755),
                         ("shutdown", "etc/omg/shutdown", 0o755), ("omg-python", "usr/local/bin/omg-python", 0o755)):  # fmt: skip
        p = root / dst
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(RECIPE / f, p)
        os.chmod(p, mode)
    (etc / "passwd").write_text("root:x:0:0:root:/data/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    os.chmod(etc / "shadow", 0o600)
    (etc / "shells").write_text("/bin/sh\n")
    (etc / "hostname").write_text("omg-board\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n")
    for d in ("data", "proc", "sys", "dev", "run", "tmp", "root", "var", "mnt"):
        (root / d).mkdir(exist_ok=True)
    os.symlink("../run", root / "var" / "run")
    os.symlink("../tmp", root / "var" / "tmp")
    links = {"usr/sbin/init": "/bin/busybox", "usr/bin/sh": "busybox", "usr/bin/python3": "python3.11",
             "usr/lib/sftp-server": "openssh/sftp-server", "usr/lib/optee_armtz": "/data/ta"}  # fmt: skip
    for p, target in links.items():
        if (root / p).is_dir() and not (root / p).is_symlink():
            (root / p).rmdir()  # tee-supplicant's empty TA directory
        (root / p).unlink(missing_ok=True)
        os.symlink(target, root / p)


# -- the whole image ---------------------------------------------------------------------------


def build_image(ta_public_pem: bytes | None = None, progress: Progress = _say) -> dict[str, Path]:
    """Firmware and guest (each built once, then found in the cache): their directories."""
    from . import home as _home

    if ta_public_pem is None:
        ta_public_pem = _home.ta_public_key_optee_pem()
    t = time.perf_counter()
    fw = build_firmware(ta_public_pem, progress)
    guest = build_guest(progress)
    progress(
        f"image ready ({time.perf_counter() - t:.1f} s): firmware {fw.name}, guest {guest.name}"
    )
    return {
        "firmware": fw,
        "guest": guest,
        "ta_dev_kit": fw / "export-ta_arm64",
        "sysroot": guest / "sysroot",
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m omgkit.board.optee_image``: build (or find) the image; print its paths as JSON."""
    from ..errors import OmgError

    try:
        paths = build_image()
    except OmgError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
