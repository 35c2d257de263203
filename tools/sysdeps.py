#!/usr/bin/env python3
"""Install the Debian packages omgkit can use, where the machine allows it.

Only what pip cannot provide lives here: offline text-to-speech engines (for
the synthetic corpus), OpenSSH's server (for the board tests) and what the
OP-TEE board in QEMU is built and run with (``optee``), and the Chromium
the browser test drives (``browser``). Everything
is optional except where a caller says ``--require``: without root or apt the
script says what it could not install and what that costs, and exits 0, so
``make`` goes on with the engines the machine already has (the
``espeakng-loader`` wheel is the floor).

mbrola and pico live in Debian's contrib and non-free components. We reach
them with a private sources list derived from the machine's own (same
mirrors, same suites, same keyrings) passed to apt with
``-o Dir::Etc::sourcelist=...``; the machine's configuration is never edited.

Runs with the system Python (no third-party imports): it is called before
the virtual environment exists.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

#: Debian packages per feature. Order matters only for the message.
GROUPS: dict[str, list[str]] = {
    "tts": [
        "espeak-ng",
        "flite",
        "festival",
        "festvox-kallpc16k",
        "festvox-kdlpc16k",
        "festvox-us-slt-hts",
        "sox",
    ],
    "tts-nonfree": [
        "libttspico-utils",
        "mbrola",
        "mbrola-us1",
        "mbrola-us2",
        "mbrola-us3",
        "mbrola-en1",
        # more festival voices (contrib): rab and don diphones, festival's MBROLA voices
        "festvox-rablpc16k",
        "festvox-don",
        "festvox-us1",
        "festvox-us2",
        "festvox-us3",
        "festvox-en1",
    ],
    "ssh": ["openssh-server", "openssh-client", "python3-venv"],
    # the OP-TEE board in QEMU (omgkit.board.optee_image): emulator, cross compiler, U-Boot,
    # and what OP-TEE's and TF-A's builds run (Debian's python3 with these two modules)
    "optee": [
        "qemu-system-arm",
        "gcc-aarch64-linux-gnu",
        "binutils-aarch64-linux-gnu",
        "libc6-dev-arm64-cross",
        "u-boot-qemu",
        "gcc",
        "make",
        "patch",
        "xz-utils",
        "python3-pyelftools",
        "python3-cryptography",
        "device-tree-compiler",
        "libssl-dev",
        "e2fsprogs",
    ],
    # notebook 04 in a real browser (tests/test_browser.py): Playwright drives Debian's Chromium
    "browser": ["chromium", "fonts-liberation"],
}

#: what a missing group costs, for the message
COST: dict[str, str] = {
    "tts": "the corpus will use the engines present",
    "tts-nonfree": "the corpus will use the engines present",
    "ssh": "the OpenSSH board tests cannot run",
    "optee": "the OP-TEE board (omg board create --kind optee-qemu) cannot be built",
    "browser": "the browser test of notebook 04 (tests/test_browser.py) fails",
}

STATE_DIR = Path(os.environ.get("OMG_APT_STATE", "/var/tmp/omgkit-apt"))


def parse_deb822(text: str) -> list[dict[str, str]]:
    """Parse a deb822 ``.sources`` file into one dict per stanza."""
    stanzas: list[dict[str, str]] = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if not line.strip() or line.lstrip().startswith("#") or ":" not in line:
                continue
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
        if fields.get("URIs") and fields.get("Suites"):
            stanzas.append(fields)
    return stanzas


def parse_one_line(text: str) -> list[dict[str, str]]:
    """Parse classic ``deb [opts] URI SUITE COMPONENTS...`` lines."""
    stanzas = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) < 3 or parts[0] != "deb":
            continue
        opts = ""
        if parts[1].startswith("["):
            end = next(i for i, p in enumerate(parts) if p.endswith("]"))
            opts = " ".join(parts[1 : end + 1]).strip("[]")
            parts = [parts[0]] + parts[end + 1 :]
        fields = {"URIs": parts[1], "Suites": parts[2]}
        for opt in opts.split():
            if opt.startswith("signed-by="):
                fields["Signed-By"] = opt.split("=", 1)[1]
        stanzas.append(fields)
    return stanzas


def nonfree_sources(etc_apt: Path = Path("/etc/apt")) -> str:
    """A sources list with the machine's mirrors and suites, all components."""
    stanzas: list[dict[str, str]] = []
    main_list = etc_apt / "sources.list"
    if main_list.is_file():
        stanzas += parse_one_line(main_list.read_text())
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for f in sorted(parts.iterdir()):
            if f.suffix == ".sources":
                stanzas += parse_deb822(f.read_text())
            elif f.suffix == ".list":
                stanzas += parse_one_line(f.read_text())
    lines = []
    seen = set()
    for st in stanzas:
        signed = st.get("Signed-By", "")
        if signed and not signed.startswith("/"):
            signed = ""  # inline keys are not supported in one-line form
        for uri in st["URIs"].split():
            if "debian" not in uri:
                continue  # only Debian's own archive has contrib/non-free
            for suite in st["Suites"].split():
                key = (uri, suite)
                if key in seen:
                    continue
                seen.add(key)
                opt = f"[signed-by={signed}] " if signed else ""
                lines.append(f"deb {opt}{uri} {suite} main contrib non-free")
    return "\n".join(lines) + ("\n" if lines else "")


def missing(packages: list[str]) -> list[str]:
    """Packages of the list that dpkg does not report as installed."""
    out = []
    for pkg in packages:
        r = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0 or "install ok installed" not in r.stdout:
            out.append(pkg)
    return out


def apt(args: list[str], private: bool) -> int:
    cmd = ["apt-get", "-y", "-q", "--no-install-recommends"]
    if private:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        (STATE_DIR / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        src = STATE_DIR / "sources.list"
        src.write_text(nonfree_sources())
        cmd += [
            "-o",
            f"Dir::Etc::sourcelist={src}",
            "-o",
            "Dir::Etc::sourceparts=-",
            "-o",
            f"Dir::State::Lists={STATE_DIR / 'lists'}",
        ]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(cmd + args, env=env).returncode


def install(groups: list[str], require: bool) -> int:
    wanted = [p for g in groups for p in GROUPS[g]]
    if not shutil.which("dpkg-query"):
        print("sysdeps: not a Debian system; using the engines already present.")
        return 1 if require else 0
    todo = missing(wanted)
    if not todo:
        print(f"sysdeps: {', '.join(groups)}: all {len(wanted)} packages present.")
        return 0
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        costs = sorted({COST[g] for g in groups if any(p in GROUPS[g] for p in todo)})
        print(
            "sysdeps: cannot install (not root or no apt-get): "
            + " ".join(todo)
            + f"\n  {'; '.join(costs)}; run as root, or `sudo apt-get install` these."
        )
        return 1 if require else 0
    print(f"sysdeps: installing {' '.join(todo)}", flush=True)
    private = any(p in GROUPS["tts-nonfree"] for p in todo)
    if apt(["update"], private=private) != 0:
        print("sysdeps: apt-get update failed; continuing with what is present.")
        return 1 if require else 0
    rc = apt(["install", *todo], private=private)
    if rc != 0:
        # Try one by one so one unavailable package does not cost the rest.
        for pkg in todo:
            apt(["install", pkg], private=private)
    still = missing(todo)
    if still:
        costs = sorted({COST[g] for g in groups if any(p in GROUPS[g] for p in still)})
        print(f"sysdeps: could not install: {' '.join(still)} ({'; '.join(costs)})")
        return 1 if require else 0
    print("sysdeps: done.")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("groups", nargs="+", choices=sorted(GROUPS))
    ap.add_argument(
        "--require", action="store_true", help="exit 1 if any package is missing afterwards"
    )
    ap.add_argument(
        "--print-sources", action="store_true", help="print the private sources list and exit"
    )
    ns = ap.parse_args(argv)
    if ns.print_sources:
        sys.stdout.write(nonfree_sources())
        return 0
    return install(ns.groups, ns.require)


if __name__ == "__main__":
    sys.exit(main())
