"""Keep a worker off the network: a network namespace of its own, with only loopback up.

A TLS init path must never reach the network, yet some do: Mongoose's built-in
TLS sends an SNTP query to a public server during init unless certificate
verification is skipped.  A campaign would send one per input.  So every
worker process (``python -m tlsleak.check.worker`` behind ``check`` and
``replay``, the atheris workers of ``fuzz``) calls :func:`isolate` first,
before the target is imported.  It moves the process into a new network
namespace whose only interface is ``lo``, and brings ``lo`` up: 127.0.0.1 and
::1 keep working for targets that use them (a gRPC server on 127.0.0.1:0), any
other address is unreachable (``ENETUNREACH``) and no packet leaves.

As root, ``unshare(CLONE_NEWNET)`` is enough.  Otherwise, or when root lacks
``CAP_SYS_ADMIN`` (many containers), a user namespace comes first
(``CLONE_NEWUSER | CLONE_NEWNET``) with the user and group mapped to themselves,
so that the target sees the same ids.  Namespaces belong to threads, so this
must run while the process has one thread: the kernel refuses a user namespace
otherwise, and a network namespace would cover the calling thread only.

When isolation is not possible (no permission, a seccomp filter, user
namespaces turned off) the worker runs anyway and :class:`Network` says why:
the worker tells its parent, whose report says so.  ``TLSLEAK_NETWORK=host``
turns isolation off, to debug a target that is meant to reach the network.
Python 3.11 has no ``os.unshare``: libc's is called through ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["ENV", "Network", "isolate"]

#: ``TLSLEAK_NETWORK=host`` leaves the workers on the host's network (debugging only).
ENV: Final = "TLSLEAK_NETWORK"

_CLONE_NEWUSER: Final = 0x10000000
_CLONE_NEWNET: Final = 0x40000000
_SIOCGIFFLAGS: Final = 0x8913
_SIOCSIFFLAGS: Final = 0x8914
_IFF_UP: Final = 0x1
#: ``struct ifreq``: the interface name, then ``ifr_flags`` in a union padded to 40 bytes.
_IFREQ: Final = struct.Struct("16sH22x")


@dataclass(frozen=True)
class Network:
    """Where a worker's network stands: isolated (and how), or not (and why)."""

    isolated: bool
    #: ``net`` (a network namespace), ``user+net`` (inside a user namespace), or "".
    namespace: str = ""
    #: Whether 127.0.0.1 works (``lo`` is up, or the host's network is kept).
    loopback: bool = True
    #: What went wrong, in a few words ("unshare: Operation not permitted"); "" if nothing.
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "isolated": self.isolated,
            "namespace": self.namespace or None,
            "loopback": self.loopback,
            "reason": self.reason or None,
        }

    @classmethod
    def from_json(cls, data: object) -> Network | None:
        """The state a worker sent (:meth:`to_json`); None when it sent none."""
        if not isinstance(data, dict):
            return None
        return cls(
            bool(data.get("isolated")),
            str(data.get("namespace") or ""),
            bool(data.get("loopback", True)),
            str(data.get("reason") or ""),
        )

    def warning(self) -> str | None:
        """The one line a report prints about the network; None when all is as it should be."""
        if not self.isolated:
            return f"network: not isolated ({self.reason}): targets could reach the network"
        if not self.loopback:
            return f"network: isolated, but loopback is down ({self.reason})"
        return None


def isolate(environ: Mapping[str, str] = os.environ) -> Network:
    """Move this process into a network namespace with only loopback; say how it went.

    Call it before the target is imported and before any thread starts.
    """
    if environ.get(ENV) == "host":
        return Network(False, reason=f"{ENV}=host")
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    if threads > 1:
        return Network(False, reason=f"{threads} threads already running")
    try:
        before = _namespace_id()
    except OSError as exc:  # no /proc: nothing could tell whether unshare worked
        return Network(False, reason=f"/proc/self/ns/net: {exc.strerror or exc}")
    try:
        namespace = _enter_namespace()
    except OSError as exc:
        return Network(False, reason=f"unshare: {exc.strerror or exc}")
    if _namespace_id() == before:
        # A seccomp filter can make a call "succeed" without running it.
        return Network(False, reason="unshare: succeeded, but the namespace is the same")
    try:
        _loopback_up()
    except OSError as exc:
        return Network(True, namespace, loopback=False, reason=f"lo: {exc.strerror or exc}")
    return Network(True, namespace)


def _namespace_id() -> int:
    """The inode that names this thread's network namespace."""
    return os.stat("/proc/self/ns/net").st_ino


def _unshare(flags: int) -> None:
    """libc's ``unshare(flags)``; OSError with the errno when it fails."""
    try:
        call = ctypes.CDLL(None, use_errno=True).unshare
    except AttributeError:
        raise OSError(errno.ENOSYS, "not in this C library") from None
    call.argtypes = [ctypes.c_int]
    call.restype = ctypes.c_int
    if call(flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _enter_namespace() -> str:
    """A new network namespace (in a new user namespace unless root may make one directly)."""
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        try:
            _unshare(_CLONE_NEWNET)
            return "net"
        except PermissionError:
            pass  # root without CAP_SYS_ADMIN here (a container): try as a user would
    _unshare(_CLONE_NEWUSER | _CLONE_NEWNET)
    # Map the user and group to themselves, so the target sees its own ids.
    # Best effort: the network namespace holds without it (ids would then read
    # as 65534; access checks still use the real ones).
    with contextlib.suppress(FileNotFoundError, PermissionError):
        _write("/proc/self/setgroups", "deny")  # required before gid_map, unprivileged
    with contextlib.suppress(OSError):
        _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
        _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
    return "user+net"


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as file:
        file.write(text)


def _loopback_up() -> None:
    """Bring ``lo`` up (SIOCGIFFLAGS, SIOCSIFFLAGS): a new namespace starts with it down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        got = fcntl.ioctl(sock, _SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0))
        flags = _IFREQ.unpack(got)[1]
        if not flags & _IFF_UP:
            fcntl.ioctl(sock, _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))
