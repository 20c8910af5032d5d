"""Hatch build hook: compile the preloaded libraries in src/tlsleak/ledgers/_native/.

* ``heap.c`` -> ``libtlsleak_heap.so``, the OpenSSL heap shim (ledger
  ``openssl-heap``): needs a C compiler and the OpenSSL headers and link
  library (Debian: gcc and libssl-dev).  A failed compile fails the build,
  naming what is missing.
* ``malloc.c`` -> ``libtlsleak_malloc.so``, the malloc interposer (ledger
  ``heap``): needs a C compiler only.  A failed compile is a warning: the
  package installs, and the ``heap`` ledger says it is not built.

Both are plain shared libraries, not Python extensions: processes load them
with LD_PRELOAD (see tlsleak.ledgers.shim), so they need no Python headers.

* A regular wheel gets them in ``tlsleak/ledgers/_native/`` and so becomes
  platform-specific.
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
LIBS = ["-lcrypto", "-ldl"]


class ShimBuildError(RuntimeError):
    """The heap shim could not be compiled."""


def _compiler() -> list[str]:
    cc = shlex.split(os.environ.get("CC", "").strip() or "cc")
    if shutil.which(cc[0]) is None:
        raise ShimBuildError(
            f"tlsleak: no C compiler ({cc[0]!r} not found) to build the OpenSSL heap shim "
            f"from {SOURCE}. Install gcc (Debian: apt-get install gcc libssl-dev), "
            "or set CC to a C compiler."
        )
    return cc


def _diagnose(output: str) -> str:
    if "openssl/" in output and ("No such file" in output or "not found" in output):
        return (
            "the OpenSSL headers (openssl/crypto.h) are missing: install libssl-dev "
            "(Debian: apt-get install libssl-dev)"
        )
    if "-lcrypto" in output:
        return (
            "the OpenSSL link library (libcrypto.so) is missing: install libssl-dev "
            "(Debian: apt-get install libssl-dev)"
        )
    return "see the compiler's output above"


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


def compile_interposer(root: Path, out: Path) -> bool:
    """Compile the malloc interposer into ``out``; on failure warn, leave none, return False.

    The package works without it (the ``heap`` ledger then says it is not
    built), so its failure does not fail the install.  A stale copy from an
    earlier build is removed, so that the ledger never runs an old interposer.
    """
    try:
        compile_shim(
            root,
            out,
            source_path=INTERPOSER_SOURCE,
            libs=INTERPOSER_LIBS,
            what="the malloc interposer (the heap ledger)",
        )
    except ShimBuildError as exc:
        out.unlink(missing_ok=True)
        print(f"warning: {exc}\nThe heap ledger will be unavailable.", file=sys.stderr)
        return False
    return True


class CustomBuildHook(BuildHookInterface):
    """Builds the libraries for the wheel (or, editable, into ``src/``)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        native = root / SOURCE.parent
        if version == "editable":
            compile_shim(root, native / LIBRARY)
            compile_interposer(root, native / INTERPOSER)
            return
        self._tmpdir = tempfile.mkdtemp(prefix="tlsleak-shim-")
        built = Path(self._tmpdir) / LIBRARY
        interposer = Path(self._tmpdir) / INTERPOSER
        try:
            compile_shim(root, built)
            have_interposer = compile_interposer(root, interposer)
        except BaseException:
            shutil.rmtree(self._tmpdir, ignore_errors=True)  # finalize() won't run
            raise
        build_data["force_include"][str(built)] = WHEEL_PATH
        if have_interposer:
            build_data["force_include"][str(interposer)] = INTERPOSER_WHEEL_PATH
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmpdir = getattr(self, "_tmpdir", None)
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
