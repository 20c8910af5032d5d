"""Writing an export folder: whole or not at all, private, and never over the user's files.

The folder is built as ``.<name>.tmp-XXXX`` next to its destination (0700,
each file 0600 through :func:`tlsleak._fs.write_atomically`, fsynced), then
renamed into place.  Only a missing or empty destination is taken.  With
``force`` an existing one is replaced only when it is a previous export: its
:data:`MARKER` names every file in it (a maintainer's ``reproduce`` binary
aside).  The old folder is renamed aside before the new one takes its place,
and put back if that fails.  A run killed mid-write leaves its temporary
folder (with the key in it); the next export next to it removes those older
than an hour.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from tlsleak._fs import fsync_dir, write_atomically

__all__ = ["MARKER", "ExportError", "write_export"]

#: Written into every export: the names of its files, so that ``force`` can
#: tell a previous export (safe to replace) from a folder of the user's.
MARKER: Final = ".tlsleak-export"
#: What a maintainer makes in an export folder (``make``): replaceable too.
_BUILT: Final = frozenset({"reproduce"})
_STALE_SECONDS: Final = 3600.0


class ExportError(Exception):
    """A folder that can't be exported or written; the message is one line."""


def write_export(into: Path, files: Mapping[str, bytes], *, force: bool = False) -> None:
    """Put ``files`` (name -> bytes) in a new private folder ``into`` (see the module docstring)."""
    replacing = _check_destination(into, force=force)
    parent = into.absolute().parent
    if parent.exists() and not parent.is_dir():
        raise ExportError(f"{into}: cannot write: {parent} is not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _sweep(parent, into.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{into.name}.tmp-", dir=parent))
    except OSError as exc:
        raise ExportError(f"{into}: cannot write: {exc.strerror or exc}") from None
    try:
        for name, data in files.items():
            # A name may hold folders (the oss-fuzz kit's .clusterfuzzlite/...): private too.
            for folder in reversed(Path(name).parents[:-1]):
                (tmp / folder).mkdir(mode=0o700, exist_ok=True)
            write_atomically(tmp / name, data)
        fsync_dir(tmp)
        if replacing:
            _replace(into, tmp)
        else:
            os.rename(tmp, into)  # over a missing or empty folder only
        fsync_dir(parent)
    except OSError as exc:
        raise ExportError(f"{into}: cannot write: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _check_destination(into: Path, *, force: bool) -> bool:
    """Whether ``into`` holds a previous export to replace; ``ExportError`` if unusable."""
    if not into.exists():
        return False
    if not into.is_dir():
        raise ExportError(f"{into}: exists and is not a folder")
    try:
        entries = {entry.name for entry in os.scandir(into)}
    except OSError as exc:
        raise ExportError(f"{into}: cannot read: {exc.strerror or exc}") from None
    if not entries:
        return False
    if not force:
        raise ExportError(
            f"{into}: exists and is not empty (use --force to replace a previous export)"
        )
    try:
        exported = set((into / MARKER).read_text(encoding="utf-8").split())
    except (OSError, UnicodeDecodeError):
        exported = set()
    foreign = sorted(entries - exported - _BUILT)
    if not exported or foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ExportError(
            f"{into}: holds files that are not a tlsleak export ({shown}); "
            "not replaced even with --force: export into another folder"
        )
    return True


def _replace(into: Path, tmp: Path) -> None:
    """Swap the new export ``tmp`` in for the previous one at ``into``, then drop the old one."""
    old = Path(tempfile.mkdtemp(prefix=f".{into.name}.old-", dir=tmp.parent))
    os.rename(into, old)  # onto an empty folder: allowed
    try:
        os.rename(tmp, into)
    except OSError:
        os.rename(old, into)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _sweep(parent: Path, name: str) -> None:
    """Remove temporary folders of exports to ``name`` killed over an hour ago (they hold keys)."""
    cutoff = time.time() - _STALE_SECONDS
    for pattern in (f".{name}.tmp-*", f".{name}.old-*"):
        for entry in parent.glob(pattern):
            with contextlib.suppress(OSError):
                if entry.is_dir() and entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry)
