"""Standalone reproducers: a stored finding as something a maintainer runs *without* tlsleak.

``tlsleak export FOLDER --into DIR`` reads a finding folder (what ``check
--out`` and ``fuzz`` store, :func:`tlsleak.check.findings.load_stored`) and
writes into ``DIR``:

* the reproducer's blobs as files (``ca.pem``/``cert.der``/``key.pem``...,
  ``password``, ``server_name``, each only when the case has it);
* for a Python target, ``reproduce.py``: the target's init path written out
  from a template (:mod:`._export_templates`; the real stacks' in
  :mod:`._export_stacks`) that loops on those blobs and
  prints the growth of RSS, glibc's heap in use and the fd count per 1,000
  attempts; for a user callable it imports the user's ``module:function``;
* for a ``c:`` target, ``reproduce.c`` (:mod:`._export_c`: a driver that dlopens the library
  and calls its init function in a loop, printing mallinfo2 bytes in use and
  live malloc blocks) and a ``Makefile``;
* ``REPORT.md`` (:mod:`._export_report`): what leaks, per attempt, where,
  the files, how to run it, and the output to expect - an upstream issue.

The blobs hold a private (test) key: ``DIR`` is made 0700 and every file
0600.  ``DIR`` appears whole or not at all: it is built as a temporary folder
next to it and renamed into place.  An existing ``DIR`` that is not empty is
refused; with ``force`` it is replaced only when it holds a previous export
and nothing else (the user's own files are never removed).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Final

from tlsleak._version import __version__
from tlsleak.cases.blobs import is_pem
from tlsleak.cases.case import InitCase, Mode
from tlsleak.check.findings import LibraryRecord, StoredFinding, load_stored
from tlsleak.check.oracle import Finding, FindingKind, format_delta
from tlsleak.reports._export_c import C_DRIVER
from tlsleak.reports._export_report import report
from tlsleak.reports._export_stacks import STACK_INIT, STACK_PACKAGES
from tlsleak.reports._export_templates import PY_INIT, PY_SCRIPT, fill
from tlsleak.reports._export_write import MARKER, ExportError, write_export
from tlsleak.targets.clib import C_PREFIX, DEFAULT_SYMBOL

__all__ = ["MARKER", "ExportError", "blob_files", "export_finding", "render", "target_kind"]

_CONTROLS: Final = {"control-leaky": True, "control-fixed": False}
#: ``package.module:function`` (the function may be dotted), as replay accepts it.
_IDENTIFIER: Final = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE_PATH: Final = re.compile(
    rf"{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}(\.{_IDENTIFIER})*"
)
_C_NAME: Final = re.compile(_IDENTIFIER)


def target_kind(target: str) -> str:
    """Which template exports ``target``: control, pyopenssl, ssl, a stack's name, callable or c."""
    if target in _CONTROLS:
        return "control"
    if target in ("pyopenssl", "ssl") or target in STACK_INIT:
        return target
    if target.startswith(C_PREFIX):
        return "c"
    if _MODULE_PATH.fullmatch(target):
        return "callable"
    raise ExportError(
        f"no standalone template for target {target!r} (there are templates for pyopenssl, "
        f"ssl, {', '.join(STACK_INIT)}, control-leaky, control-fixed, c:LIBRARY and "
        "package.module:function)"
    )


def export_finding(folder: Path, into: Path, *, force: bool = False) -> dict[str, bytes]:
    """Export the finding stored in ``folder`` into ``into``; the files written, by name.

    Raises :class:`~tlsleak.check.findings.FindingError` for a folder that is
    not a finding, :class:`ExportError` for one that can't be exported or
    written; both with a one-line message.
    """
    stored = load_stored(folder)
    files = render(stored)
    write_export(into, files, force=force)
    return files


def render(stored: StoredFinding) -> dict[str, bytes]:
    """Every file of the export of ``stored``, by name (blobs, reproducer, REPORT.md)."""
    finding, case = stored.finding, stored.reproducer
    kind = target_kind(finding.target)
    blobs = blob_files(case, c_abi=kind == "c")
    names = {field: name for name, (field, _data) in blobs.items()}
    files = {name: data for name, (_field, data) in blobs.items()}
    library = (stored.library or library_of(finding.target)) if kind == "c" else None
    title = _title(finding, library)
    if library is not None:
        files["reproduce.c"] = _c_driver(stored, library, title).encode()
        files["Makefile"] = _MAKEFILE.encode()
    else:
        files["reproduce.py"] = _python_script(stored, kind, names, title).encode()
    version = _installed(STACK_PACKAGES[kind]) if kind in STACK_PACKAGES else None
    files["REPORT.md"] = report(stored, kind, title, library, names, version).encode()
    files[MARKER] = ("\n".join(sorted([*files, MARKER])) + "\n").encode()
    return files


def blob_files(case: InitCase, *, c_abi: bool = False) -> dict[str, tuple[str, bytes]]:
    """File name -> (case field, bytes) of the case's non-empty blobs.

    Certificates and keys are named ``.pem`` when they carry PEM armor, else
    ``.der``.  The C ABI carries no password or server name: not written.
    """
    out: dict[str, tuple[str, bytes]] = {}
    for field in ("ca", "cert", "key"):
        data: bytes = getattr(case, field)
        if data:
            out[f"{field}.{'pem' if is_pem(data) else 'der'}"] = (field, data)
    if not c_abi:
        for field in ("password", "server_name"):
            if data := getattr(case, field):
                out[field] = (field, data)
    return out


def library_of(target: str) -> LibraryRecord:
    """The library a ``c:`` spec names, as far as the spec says (for folders stored without one)."""
    spec = target.removeprefix(C_PREFIX)
    path, symbol = spec, DEFAULT_SYMBOL
    head, sep, tail = spec.rpartition(":")
    if sep and head and not os.path.exists(spec) and _C_NAME.fullmatch(tail):
        path, symbol = head, tail
    return LibraryRecord(path, symbol, "")


def _installed(package: str) -> str | None:
    """The version of ``package`` installed here (read from its metadata, not imported)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _title(finding: Finding, library: LibraryRecord | None) -> str:
    what = finding.target
    if library is not None:
        what = f"{Path(library.path).name} ({library.symbol})"
    if finding.kind in (FindingKind.LEAK, FindingKind.CYCLE) and finding.delta:
        step = f" when step {finding.step} fails" if finding.step else ""
        return f"{finding.kind} in {what}: {format_delta(finding.delta)} per attempt{step}"
    return f"{finding.kind} in {what}: {finding.outcome.describe()}"


def _python_script(stored: StoredFinding, kind: str, names: Mapping[str, str], title: str) -> str:
    finding, case = stored.finding, stored.reproducer
    fields = ("ca", "cert", "key", "password", "server_name")
    files = {field: repr(names.get(field, "")) for field in fields}
    init = STACK_INIT.get(kind) or PY_INIT[kind]
    if kind == "control":
        init = fill(init, leaky=str(_CONTROLS[finding.target]))
    elif kind == "ssl":
        init = fill(init, cert=files["cert"], key=files["key"])
    elif kind == "callable":
        module, _, attrs = finding.target.partition(":")
        init = fill(init, module=repr(module), attrs=repr(tuple(attrs.split("."))))
    return fill(
        PY_SCRIPT,
        title=_one_line(title),
        version=__version__,
        finding=_one_line(stored.folder.name),
        mode=case.mode.name,
        labels=repr(tuple(case.labels)),
        init=init,
        target=_one_line(finding.target).replace("'", ""),
        **files,
    )


def _one_line(text: str) -> str:
    """``text`` safe inside a docstring, an f-string and a C comment: one line, no quotes."""
    flat = " ".join(text.split())
    return re.sub(r'["\\{}]|\*/', "", flat)


def _c_array(name: str, data: bytes) -> str:
    rows = [", ".join(f"0x{b:02x}" for b in data[i : i + 16]) for i in range(0, len(data), 16)]
    body = ",\n    ".join(rows) if rows else "0"
    return (
        f"static const unsigned char {name}[] = {{\n    {body}\n}};\n"
        f"static const size_t {name}_LEN = {len(data)};"
    )


def _c_driver(stored: StoredFinding, library: LibraryRecord, title: str) -> str:
    case = stored.reproducer
    blobs = [_c_array(n.upper(), getattr(case, n)) for n in ("ca", "cert", "key")]
    blobs.append(f"#define IS_CLIENT {int(case.mode is Mode.CLIENT)}")
    # An allocation failure is anchored from the end of a clean attempt: the
    # allocations tlsleak's worker makes before calling the library are not
    # the driver's.  A folder stored without its warm-up count can't be.
    point = stored.fail_point
    blobs += [
        "/* The allocation to fail, as tlsleak numbered it, and its distance from the end. */",
        f"#define TLSLEAK_FAIL_AT {point.fail_at if point else 0}",
        f"#define TLSLEAK_WARMUP {point.warmup_allocations if point else 0}",
        f"#define FAIL_FROM_END {point.from_end if point else -1}",
    ]
    return fill(
        C_DRIVER,
        title=_one_line(title),
        version=__version__,
        finding=_one_line(stored.folder.name),
        symbol=library.symbol,
        library=_c_string_literal(library.path),
        blobs="\n".join(blobs),
    )


def _c_string_literal(text: str) -> str:
    """``text`` as a C string literal: anything but plain printable ASCII as octal escapes."""
    out = []
    for byte in text.encode("utf-8", "surrogateescape"):
        char = chr(byte)
        plain = 32 <= byte < 127 and char not in '"\\?'
        out.append(char if plain else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


_MAKEFILE: Final = """\
# The standalone reproducer: make && ./reproduce [LIBRARY [ROUNDS [ATTEMPTS]]]
reproduce: reproduce.c
\t$(CC) -O1 -Wall -rdynamic -o $@ reproduce.c -ldl
"""
