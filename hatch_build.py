"""Hatch build hook: compile the OpenSSL heap shim (src/tlsleak/ledgers/_native/heap.c).

The shim is a plain shared library, not a Python extension: processes load it
with LD_PRELOAD (see tlsleak.ledgers.shim), so it needs no Python headers, only a C
compiler and the OpenSSL headers and link library (Debian: gcc and libssl-dev).

* A regular wheel gets it as ``tlsleak/ledgers/_native/libtlsleak_heap.so`` and so
  becomes platform-specific.
* An editable install (``pip install -e .``) runs the package from ``src/``,
  so the library is built next to its source, where it is found
  (``src/tlsleak/ledgers/_native/libtlsleak_heap.so``, ignored by git).

A failed compile fails the build, naming what is missing.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("src", "tlsleak", "ledgers", "_native", "heap.c")
LIBRARY = "libtlsleak_heap.so"
WHEEL_PATH = f"tlsleak/ledgers/_native/{LIBRARY}"

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


def compile_shim(root: Path, out: Path) -> None:
    """Compile ``root/SOURCE`` into ``out``, replacing it atomically.

    Atomically, because a running process may have the old library mapped
    (a preloaded worker): writing over it in place could crash that process.
    """
    source = root / SOURCE
    if not source.is_file():
        raise ShimBuildError(f"tlsleak: {source} is missing; cannot build the OpenSSL heap shim")
    extra_cflags = shlex.split(os.environ.get("CFLAGS", ""))
    extra_ldflags = shlex.split(os.environ.get("LDFLAGS", ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{LIBRARY}.", dir=out.parent)
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
        *LIBS,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            output = (proc.stdout + proc.stderr).strip()
            raise ShimBuildError(
                f"tlsleak: building the OpenSSL heap shim failed: {_diagnose(output)}.\n"
                f"command: {shlex.join(cmd)}\n{output}"
            )
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class CustomBuildHook(BuildHookInterface):
    """Builds ``libtlsleak_heap.so`` for the wheel (or, editable, into ``src/``)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        if version == "editable":
            compile_shim(root, root / SOURCE.parent / LIBRARY)
            return
        self._tmpdir = tempfile.mkdtemp(prefix="tlsleak-shim-")
        built = Path(self._tmpdir) / LIBRARY
        try:
            compile_shim(root, built)
        except BaseException:
            shutil.rmtree(self._tmpdir, ignore_errors=True)  # finalize() won't run
            raise
        build_data["force_include"][str(built)] = WHEEL_PATH
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmpdir = getattr(self, "_tmpdir", None)
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
