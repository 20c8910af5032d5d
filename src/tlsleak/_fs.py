"""Files that appear whole or not at all, and stay private.

Everything tlsleak writes for a user to keep (corpus inputs, finding folders,
JSON reports) goes through :func:`write_atomically`: a reader, a second
campaign or a crash in the middle never sees half a file.  Case files hold
private keys, so the temporary file is created 0600 (``mkstemp``) and keeps
that mode when it is renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["TMP_GLOBS", "fsync_dir", "write_atomically"]

#: Names of the temporary files :func:`write_atomically` may leave behind when
#: the process is killed (``.NAME.tmp-XXXX``); the oldest scheme used
#: ``.tmp-XXXX``.  Readers skip dot files; sweepers remove these.
TMP_GLOBS = (".*.tmp-*", ".tmp-*")


def write_atomically(path: Path, data: bytes, *, replace: bool = True) -> bool:
    """Write ``data`` to ``path``: written to a private temporary file, fsynced, then put in place.

    With ``replace`` the file takes the place of whatever was there
    (``rename``).  Without it an existing file is never touched: the new one is
    *linked* into place, which fails if the name exists, and ``False`` is
    returned (content-named files such as corpus inputs are the same bytes
    either way).  Raises :class:`OSError`; the temporary file is removed
    whatever happens.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable; best effort where folders can't be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
