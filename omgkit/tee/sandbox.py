"""Confine an emulated TA's process, as OP-TEE's core confines a TA at S-EL0.

A TA of the emulated TEE runs in a process of its own (``omgkit.tee.ta_host``)
and talks to the TEE core only over its channel. Before it runs a TA's code,
that process takes away what the core alone may use:

- **Landlock** (Linux 5.13+): no filesystem access but reading the CPU's
  description (``READABLE``), so not the
  device's ``secure/`` files (hardware unique key, device key, counters,
  storage) nor ``/proc/<core>/mem``; and a process in a Landlock domain may
  not ptrace (or ``process_vm_readv``) one outside it, so not the core's
  memory either. From ABI 6: no signals to processes outside the domain.
- **seccomp**: ``socket`` and ``connect`` fail with EPERM, so not the TEE's
  own sockets (the hardware stand-in ``hw.sock`` feeds the microphone and
  sets the clock) nor the network. The TA keeps the one channel it has.
- ``PR_SET_NO_NEW_PRIVS`` (needed by both) and no core dumps.

Both are kernel features from the mainline kernel, driven through their
documented system calls; nothing here is a sandbox of our own making.
:func:`confine` returns what took effect; where the kernel lacks them the
TA still runs in its own process, and ``omg`` says what is missing
(docs/threat-model.md).
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_DUMPABLE = 4
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2

# Landlock (include/uapi/linux/landlock.h); the same system call numbers on
# x86_64 and aarch64
_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
_RULE_PATH_BENEATH = 1
_FS_READ_FILE, _FS_READ_DIR = 1 << 2, 1 << 3
READABLE = ("/proc/cpuinfo", "/sys/devices/system/cpu")
"""What a confined TA may still read: the CPU's description, which the inference
runtimes' thread pools and kernels (XNNPACK's cpuinfo) read when a model loads."""
_LANDLOCK_CREATE_RULESET_VERSION = 1
_FS_RIGHTS_BY_ABI = {1: 13, 2: 14, 3: 15, 4: 15, 5: 16}
"""How many filesystem access rights (bits from 0) each Landlock ABI handles."""
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 2

# seccomp classic BPF (include/uapi/linux/{filter,seccomp,audit}.h)
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x06
_SECCOMP_RET_ALLOW, _SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
_EPERM = 1
_ARCH = {  # machine: (AUDIT_ARCH_*, socket, connect)
    "x86_64": (0xC000003E, 41, 42),
    "aarch64": (0xC00000B7, 198, 203),
}


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none)."""
    r = _libc().syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))  # fmt: skip
    return max(0, int(r))


def _landlock(abi: int) -> None:
    fs = (1 << _FS_RIGHTS_BY_ABI.get(abi, 16)) - 1
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0
    attr = struct.pack("=QQQ", fs, net, scoped)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    buf = ctypes.create_string_buffer(attr[:size], size)
    libc = _libc()
    fd = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, buf, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:  # nothing of what the ruleset handles is allowed but READABLE, read-only
        for path in READABLE:
            try:
                pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                rights = _FS_READ_FILE | (_FS_READ_DIR if os.path.isdir(path) else 0)
                rule = ctypes.create_string_buffer(struct.pack("=Qi", rights, pfd), 12)
                if libc.syscall(_SYS_LANDLOCK_ADD_RULE, ctypes.c_int(fd),
                                ctypes.c_int(_RULE_PATH_BENEATH), rule, ctypes.c_uint32(0)) != 0:  # fmt: skip
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
            finally:
                os.close(pfd)
        if libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(fd)


def _seccomp() -> bool:
    arch = _ARCH.get(platform.machine())
    if arch is None:
        return False
    audit, nr_socket, nr_connect = arch

    def ins(code, jt, jf, k):
        return struct.pack("=HBBI", code, jt, jf, k)

    prog = b"".join([
        ins(_BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        ins(_BPF_JEQ_K, 1, 0, audit),
        ins(_BPF_RET_K, 0, 0, _SECCOMP_RET_ERRNO | _EPERM),  # another ABI (x32, compat): refused
        ins(_BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        ins(_BPF_JGE_K, 3, 0, 0x40000000),  # x32 system calls: refused
        ins(_BPF_JEQ_K, 2, 0, nr_socket),
        ins(_BPF_JEQ_K, 1, 0, nr_connect),
        ins(_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW),
        ins(_BPF_RET_K, 0, 0, _SECCOMP_RET_ERRNO | _EPERM),
    ])  # fmt: skip
    filt = ctypes.create_string_buffer(prog, len(prog))

    class _Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fp = _Fprog(len(prog) // 8, ctypes.addressof(filt))
    libc = _libc()
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fp), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
    return True


def confine() -> dict[str, object]:
    """Confine this process for good; returns what took effect.

    ``{"landlock": ABI or 0, "seccomp": bool, "no_new_privs": bool}``.
    Call it after everything the process needs from the filesystem is
    loaded (runtimes, libraries, the TA's modules).
    """
    libc = _libc()
    out: dict[str, object] = {"landlock": 0, "seccomp": False, "no_new_privs": False}
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return out
    out["no_new_privs"] = True
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    abi = landlock_abi()
    if abi:
        _landlock(abi)
        out["landlock"] = abi
    out["seccomp"] = _seccomp()
    return out
