"""Hatch build hook: compile the preloaded libraries in src/tlsleak/ledgers/_native/.

* ``heap.c`` -> ``libtlsleak_heap.so``, the OpenSSL heap shim (ledger
  ``openssl-heap``), which finds the system libcrypto at run time (dlopen),
  so that it needs no OpenSSL headers to build;
* ``malloc.c`` -> ``libtlsleak_malloc.so``, the malloc interposer (ledger
  ``heap``).

Both need a C compiler only.  A failed compile is a warning, not a failed
install: tlsleak runs with the ledgers that need no library (typed OpenSSL
objects, fds, Python objects), and the others say they are not built and how
to get them.

Both are plain shared libraries, not Python extensions: processes load them
with LD_PRELOAD (see tlsleak.ledgers.shim), so they need no Python headers,
and a wheel that holds them is tagged ``py3-none-<platform>``, not for one
CPython (a wheel without them is ``py3-none-any``).

* A regular wheel gets them in ``tlsleak/ledgers/_native/``.
* An editable install (``pip install -e .``) runs the package from ``src/``,
  so the libraries are built next to their sources, where they are found
  (``src/tlsleak/ledgers/_native/*.so``, ignored by git).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("src", "tlsleak", "ledgers", "_native", "heap.c")
LIBRARY = "libtlsleak_heap.so"
WHEEL_PATH = f"tlsleak/ledgers/_native/{LIBRARY}"

# The malloc interposer: no libcrypto (it must count any stack); -ldl for
# dlsym on a glibc older than 2.34, where it was not yet part of libc.
INTERPOSER_SOURCE = SOURCE.with_name("malloc.c")
INTERPOSER = "libtlsleak_malloc.so"
INTERPOSER_WHEEL_PATH = f"tlsleak/ledgers/_native/{INTERPOSER}"
INTERPOSER_LIBS = ["-ldl"]

# -fvisibility=hidden: only the tlsleak_heap_* API is exported (the hooks stay
# private).  -z nodelete: the library is never unmapped (OpenSSL keeps
# pointers to its hooks, and a pthread key names its destructor).
CFLAGS = ["-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-Wall", "-Wextra", "-pthread"]
LDFLAGS = ["-Wl,-z,nodelete"]
LIBS = ["-ldl"]


class ShimBuildError(RuntimeError):
    """The heap shim could not be compiled."""


def _compiler() -> list[str]:
    cc = shlex.split(os.environ.get("CC", "").strip() or "cc")
    if shutil.which(cc[0]) is None:
        raise ShimBuildError(
            f"tlsleak: no C compiler ({cc[0]!r} not found) to build the heap ledgers' "
            "libraries. Install one (Debian: apt-get install gcc; Fedora: dnf install gcc; "
            "macOS: xcode-select --install), or set CC to a C compiler, and reinstall tlsleak"
        )
    return cc


def _diagnose(output: str) -> str:
    if "dlfcn.h" in output or "malloc.h" in output:
        return "this C library has no glibc headers (dlfcn.h, malloc.h): Linux and glibc only"
    return "see the compiler's output below"


def compile_shim(
    root: Path,
    out: Path,
    *,
    source_path: Path = SOURCE,
    libs: list[str] = LIBS,
    what: str = "the OpenSSL heap shim",
) -> None:
    """Compile ``root/source_path`` into ``out``, replacing it atomically.

    Atomically, because a running process may have the old library mapped
    (a preloaded worker): writing over it in place could crash that process.
    """
    source = root / source_path
    if not source.is_file():
        raise ShimBuildError(f"tlsleak: {source} is missing; cannot build {what}")
    extra_cflags = shlex.split(os.environ.get("CFLAGS", ""))
    extra_ldflags = shlex.split(os.environ.get("LDFLAGS", ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    cmd = [
        *_compiler(),
        *CFLAGS,
        *extra_cflags,
        str(source),
        "-o",
        tmp,
        *LDFLAGS,
        *extra_ldflags,
        *libs,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            output = (proc.stdout + proc.stderr).strip()
            raise ShimBuildError(
                f"tlsleak: building {what} failed: {_diagnose(output)}.\n"
                f"command: {shlex.join(cmd)}\n{output}"
            )
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def compile_optional(root: Path, out: Path, *, interposer: bool) -> bool:
    """Compile the shim or the interposer into ``out``; on failure warn, leave none, return False.

    The package works without either (their ledgers then say they are not
    built), so a failure does not fail the install.  A stale copy from an
    earlier build is removed, so that a ledger never runs an old library.
    """
    if interposer:
        source, libs, what = INTERPOSER_SOURCE, INTERPOSER_LIBS, "the malloc interposer"
        ledger = "The heap ledger"
    else:
        source, libs, what = SOURCE, LIBS, "the OpenSSL heap shim"
        ledger = "The openssl-heap ledger"
    try:
        compile_shim(root, out, source_path=source, libs=libs, what=what)
    except ShimBuildError as exc:
        out.unlink(missing_ok=True)
        print(f"warning: {exc}\n{ledger} will be unavailable.", file=sys.stderr)
        return False
    return True


def _platform_tag() -> str:
    """This machine's wheel platform tag (``linux_x86_64``), as pip's own tags name it."""
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


class CustomBuildHook(BuildHookInterface):
    """Builds the libraries for the wheel (or, editable, into ``src/``)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        native = root / SOURCE.parent
        if version == "editable":
            compile_optional(root, native / LIBRARY, interposer=False)
            compile_optional(root, native / INTERPOSER, interposer=True)
            return
        self._tmpdir = tempfile.mkdtemp(prefix="tlsleak-shim-")
        built = {
            WHEEL_PATH: (Path(self._tmpdir) / LIBRARY, False),
            INTERPOSER_WHEEL_PATH: (Path(self._tmpdir) / INTERPOSER, True),
        }
        included = False
        try:
            for wheel_path, (path, interposer) in built.items():
                if compile_optional(root, path, interposer=interposer):
                    build_data["force_include"][str(path)] = wheel_path
                    included = True
        except BaseException:
            shutil.rmtree(self._tmpdir, ignore_errors=True)  # finalize() won't run
            raise
        if included:
            # Native code, but no CPython extension: any Python 3 on this platform.
            build_data["pure_python"] = False
            build_data["tag"] = f"py3-none-{_platform_tag()}"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmpdir = getattr(self, "_tmpdir", None)
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
