"""Run the check worker under another interpreter: tlsleak is shipped to it, not installed in it.

``tlsleak check --python .venv/bin/python`` must test the user's environment
as it is: their pyOpenSSL and cryptography, pinned to whatever they pin,
never the ones tlsleak itself was installed with.  So the worker is started
as ``OTHER_PYTHON -m tlsleak.check.worker`` with ``PYTHONPATH`` set to a
private temporary folder (0700) holding a copy of the ``tlsleak`` package
only, never this environment's site-packages.  The worker side needs only the
standard library (tests/check/test_python_option.py proves it in a venv
without cryptography), and the preloaded ``_native/*.so`` libraries are plain
C, loaded by the dynamic linker whatever the Python.

The folder is removed by :meth:`Shipment.remove` (the oracle's ``close``), at
exit, and, if this process was killed before either could run, by the next
:class:`Shipment` made on the machine (:func:`sweep`: folders whose process is
gone).  It holds no key material; private all the same, as everything
tlsleak leaves in the temporary folder.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import stat
import subprocess
import sysconfig
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["MIN_PYTHON", "Interpreter", "PythonRefused", "Shipment", "probe_python", "sweep"]

#: The oldest Python tlsleak runs on (pyproject.toml's requires-python; a test keeps them equal).
MIN_PYTHON: Final = (3, 11)

_PREFIX: Final = "tlsleak-ship-"
_FOLDER: Final = re.compile(rf"{_PREFIX}(\d+)-")
# Written so that any Python parses it (a Python 2 must be refused by its
# version, not by a syntax error): prints "tlsleak-python MAJOR MINOR MICRO".
_PROBE: Final = (
    "import sys; sys.stdout.write('tlsleak-python %d %d %d' % tuple(sys.version_info[:3]))"
)
_PROBE_ANSWER: Final = re.compile(r"tlsleak-python (\d+) (\d+) (\d+)")
#: Seconds the probe may take (a cold interpreter on a busy machine).
PROBE_TIMEOUT: Final = 60.0


class PythonRefused(ValueError):
    """The ``--python`` path is not a Python tlsleak can run on: one line saying why."""


@dataclass(frozen=True, slots=True)
class Interpreter:
    """A Python to run the worker under: its path as given (made absolute) and its version."""

    path: str
    version: tuple[int, int, int]

    def __str__(self) -> str:
        return f"{self.path} (Python {'.'.join(map(str, self.version))})"


def probe_python(path: str) -> Interpreter:
    """``path`` checked to be an executable Python of at least :data:`MIN_PYTHON`.

    The path is made absolute but not resolved: a venv's ``bin/python`` is a
    symlink, and only through the link does the interpreter find its venv.
    """
    absolute = os.path.abspath(os.path.expanduser(path))
    if not os.path.lexists(absolute):
        raise PythonRefused(f"--python {path}: no such file")
    if os.path.isdir(absolute) or not os.access(absolute, os.X_OK):
        raise PythonRefused(f"--python {path}: not an executable file")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    try:
        done = subprocess.run(
            [absolute, "-c", _PROBE],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PythonRefused(f"--python {path}: cannot run it: {why}") from None
    answer = _PROBE_ANSWER.fullmatch(done.stdout.decode("ascii", "replace").strip())
    if done.returncode != 0 or answer is None:
        raise PythonRefused(f"--python {path}: not a Python interpreter (no answer to a probe)")
    major, minor, micro = (int(x) for x in answer.groups())
    if (major, minor) < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        raise PythonRefused(
            f"--python {path}: Python {major}.{minor}.{micro}; tlsleak needs {need} or newer"
        )
    return Interpreter(absolute, (major, minor, micro))


def _package_folder() -> Path:
    """The folder of the ``tlsleak`` package this process runs (this file is in its ``check``)."""
    return Path(__file__).resolve().parents[1]


def _ignored(folder: str, names: list[str]) -> set[str]:
    # Bytecode of this interpreter, the C sources (the built .so are kept) and
    # the bundled corpus: none of it is the worker's.
    return {
        n for n in names if n in ("__pycache__", "_corpus") or n.endswith((".pyc", ".c"))
    }


class Shipment:
    """A private folder (0700) with a copy of the ``tlsleak`` package, for a worker's PYTHONPATH."""

    def __init__(self) -> None:
        sweep()
        self.folder: Path | None = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
        try:
            shutil.copytree(_package_folder(), self.folder / "tlsleak", ignore=_ignored)
        except BaseException:
            self.remove()
            raise
        atexit.register(self.remove)

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` with the shipped package first on PYTHONPATH, and none of this environment.

        A user's own PYTHONPATH entries are kept (their code may live there),
        except this interpreter's site-packages and the folder tlsleak itself
        is imported from, which would bring this environment's packages back.
        """
        if self.folder is None:
            raise RuntimeError("the shipment was removed")
        ours = {os.path.realpath(p) for p in _own_paths()}
        kept = [
            p
            for p in base.get("PYTHONPATH", "").split(os.pathsep)
            if p and os.path.realpath(p) not in ours
        ]
        env = dict(base)
        env["PYTHONPATH"] = os.pathsep.join([str(self.folder), *kept])
        # This interpreter's home is not the other one's.
        env.pop("PYTHONHOME", None)
        return env

    def remove(self) -> None:
        """Remove the folder (again is fine)."""
        folder, self.folder = self.folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        atexit.unregister(self.remove)


def _own_paths() -> list[str]:
    paths = [sysconfig.get_path(name) for name in ("purelib", "platlib")]
    return [p for p in paths if p] + [str(_package_folder().parent)]


def sweep(folder: Path | None = None) -> list[Path]:
    """Remove the shipment folders of this user whose process is gone (it was killed); say which."""
    root = Path(tempfile.gettempdir()) if folder is None else folder
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = _FOLDER.match(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        try:
            info = entry.lstat()
        except OSError:
            continue
        if info.st_uid != os.getuid() or not stat.S_ISDIR(info.st_mode):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
