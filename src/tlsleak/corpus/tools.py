"""Corpus housekeeping: ``tlsleak corpus stats``, ``import`` and ``merge``.

* :func:`corpus_stats` counts what a corpus holds (modes, key types, encodings,
  defect labels) and, given a checker, which outcomes, steps and OpenSSL
  errors it reaches on a target.
* :func:`import_blobs` turns raw PEM/DER files from elsewhere (another
  project's fuzzing corpus, a folder of test certificates) into cases.
* :func:`merge_corpora` copies a minimal set of cases that keeps every distinct
  behaviour of some corpora into one folder.

Everything here reads source files and writes only through
:func:`tlsleak.cases.files.write_case`: atomic, content-addressed, never replacing a
file, so a source corpus is never modified.  A destination that can't be
written is refused by :func:`check_writable` before any work is done.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tlsleak.cases.blobs import is_pem, pem_blocks
from tlsleak.cases.case import InitCase, Mode
from tlsleak.cases.describe import key_type_name
from tlsleak.cases.files import (
    MAX_CASE_BYTES,
    CorpusError,
    case_files,
    list_files,
    load_cases,
    read_limited,
    write_case,
)
from tlsleak.check.oracle import Verdict
from tlsleak.fuzz.guidance import features

__all__ = [
    "IMPORT_FIELDS",
    "IMPORT_LABEL",
    "Checker",
    "CorpusStats",
    "ImportResult",
    "MergeResult",
    "check_writable",
    "corpus_stats",
    "format_stats",
    "import_blobs",
    "import_cases",
    "imported_case",
    "merge_corpora",
]

#: The fields a raw file can be imported as.
IMPORT_FIELDS: Final = ("ca", "cert", "key")
#: The label every imported case carries, so stats and merge can tell them apart.
IMPORT_LABEL: Final = "imported"

#: Row names for blobs that hold nothing, or nothing cryptography can parse.
EMPTY, UNPARSEABLE = "(empty)", "(unparseable)"
NO_ERROR = "(no OpenSSL error)"
UNLABELLED = "(unlabelled)"


class Checker(Protocol):
    """What stats and merge need of an oracle (``IsolatedOracle`` or ``Oracle``)."""

    def check(self, case: InitCase) -> Verdict: ...


def check_writable(folder: Path) -> None:
    """Make ``folder`` if needed and check that cases can be written there, or CorpusError.

    Done before the work, so that a folder that can't be listed or written
    is one line at once, not a traceback after minutes of merging.
    """
    try:
        if folder.exists() and not folder.is_dir():
            raise CorpusError(f"{folder}: exists and is not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        os.listdir(folder)  # writes skip the cases already there: it must be readable
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CorpusError(f"{folder}: cannot write cases there: {exc.strerror}") from None


# -- stats ---------------------------------------------------------------------------


def _first_object(blob: bytes) -> tuple[bytes, bool]:
    """The first object of ``blob`` and whether it is PEM (targets read a bundle's first)."""
    if is_pem(blob):
        return pem_blocks(blob)[0], True
    return blob, False


def cert_key_type(blob: bytes) -> str:
    """The key type of the (first) certificate in ``blob``, as a row name."""
    if not blob:
        return EMPTY
    obj, pem = _first_object(blob)
    try:
        cert = (x509.load_pem_x509_certificate if pem else x509.load_der_x509_certificate)(obj)
        return key_type_name(cert.public_key())
    except Exception:  # any parse failure is just "unparseable" in a count
        return UNPARSEABLE


def private_key_type(blob: bytes, password: bytes) -> str:
    """The type of the private key in ``blob``, as a row name."""
    if not blob:
        return EMPTY
    obj, pem = _first_object(blob)
    loader = serialization.load_pem_private_key if pem else serialization.load_der_private_key
    try:
        return key_type_name(loader(obj, password or None))
    except Exception:  # wrong password, damaged, unsupported: all unparseable here
        return UNPARSEABLE


def blob_encoding(blob: bytes) -> str:
    """PEM, DER (anything without PEM armor, as the targets treat it) or empty."""
    if not blob:
        return EMPTY
    return "PEM" if is_pem(blob) else "DER"


@dataclass
class CorpusStats:
    """Counts over a corpus; the ``target`` ones only when a checker was given."""

    cases: int = 0
    modes: Counter[str] = field(default_factory=Counter)
    cert_keys: Counter[str] = field(default_factory=Counter)
    key_keys: Counter[str] = field(default_factory=Counter)
    #: Field name ("ca", "cert", "key") -> encoding -> count.
    encodings: dict[str, Counter[str]] = field(
        default_factory=lambda: {name: Counter() for name in IMPORT_FIELDS}
    )
    labels: Counter[str] = field(default_factory=Counter)
    target: str | None = None
    statuses: Counter[str] = field(default_factory=Counter)
    #: (step, "library: reason") -> cases that reached it.
    reached: Counter[tuple[str, str]] = field(default_factory=Counter)
    findings: Counter[str] = field(default_factory=Counter)


def corpus_stats(
    paths: Sequence[Path], checker: Checker | None = None, target: str | None = None
) -> CorpusStats:
    """Count what the case files under ``paths`` hold (and reach, with ``checker``)."""
    stats = CorpusStats(target=target)
    for _path, case in load_cases(paths):
        stats.cases += 1
        stats.modes[case.mode.value] += 1
        stats.cert_keys[cert_key_type(case.cert)] += 1
        stats.key_keys[private_key_type(case.key, case.password)] += 1
        for name in IMPORT_FIELDS:
            stats.encodings[name][blob_encoding(getattr(case, name))] += 1
        stats.labels.update(case.labels or (UNLABELLED,))
        if checker is None:
            continue
        verdict = checker.check(case)
        outcome = verdict.outcome
        stats.statuses[str(outcome.status)] += 1
        step = outcome.step or "-"
        # A case counts once per distinct error, however often OpenSSL queued it.
        reasons = sorted({str(e) for e in outcome.errors})
        if outcome.step is not None:
            for reason in reasons or [NO_ERROR]:
                stats.reached[(step, reason)] += 1
        stats.findings.update(f.signature for f in verdict.findings)
    return stats


def _section(title: str, rows: Iterable[tuple[str, int]]) -> list[str]:
    # Most common first, then by name, so two runs print the same order.
    ordered = sorted(rows, key=lambda r: (-r[1], r[0]))
    if not ordered:
        return [f"{title}:", "  (none)"]
    width = max(len(name) for name, _ in ordered)
    cwidth = max(len(str(n)) for _, n in ordered)
    return [f"{title}:", *(f"  {name:<{width}}  {n:>{cwidth}}" for name, n in ordered)]


def format_stats(stats: CorpusStats) -> str:
    """``stats`` as plain aligned text: one section per count, blank lines between."""
    sections = [
        [f"cases: {stats.cases}"],
        _section("mode", stats.modes.items()),
        _section("certificate key type", stats.cert_keys.items()),
        _section("private key type", stats.key_keys.items()),
        *(_section(f"{name} encoding", stats.encodings[name].items()) for name in IMPORT_FIELDS),
        _section("labels", stats.labels.items()),
    ]
    if stats.target is not None:
        swidth = max((len(step) for step, _ in stats.reached), default=0)
        reached = [(f"{step:<{swidth}}  {why}", n) for (step, why), n in stats.reached.items()]
        sections.append(_section(f"outcome on {stats.target}", stats.statuses.items()))
        sections.append(_section("step and OpenSSL error reached", reached))
        if stats.findings:
            sections.append(_section("findings", stats.findings.items()))
    return "\n\n".join("\n".join(section) for section in sections)


# -- import --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    new: int
    present: int


def imported_case(
    blob: bytes, as_field: str, mode: Mode = Mode.SERVER, *, with_material: bool = False
) -> InitCase:
    """The case that feeds ``blob`` to an init path as its ``as_field``.

    Without ``with_material`` every other field is empty, so the init path
    stops early (no key, or no certificate); with it, the other fields hold
    the valid EC P-256 identity of :mod:`tlsleak.cases.material`, so the imported
    blob is read in the middle of a realistic init.
    """
    if as_field not in IMPORT_FIELDS:
        raise ValueError(f"can import as {', '.join(IMPORT_FIELDS)}, not {as_field!r}")
    case = InitCase(mode=mode, labels=(IMPORT_LABEL,))
    if with_material:
        # Imported lazily: building the identity signs certificates.
        from tlsleak.cases.material import KeyType, cert_bytes, identity, key_bytes

        ident = identity(KeyType.EC_P256)
        case = replace(
            case,
            ca=cert_bytes(ident.root),
            cert=cert_bytes(ident.leaf) + b"".join(cert_bytes(c) for c in ident.chain),
            key=key_bytes(ident.key),
            server_name=b"localhost" if mode is Mode.CLIENT else b"",
        )
    if as_field == "ca":
        return replace(case, ca=blob)
    if as_field == "cert":
        return replace(case, cert=blob)
    return replace(case, key=blob)


def import_blobs(
    paths: Sequence[Path],
    as_field: str,
    into: Path,
    mode: Mode = Mode.SERVER,
    *,
    with_material: bool = False,
) -> ImportResult:
    """Import every file under ``paths`` as a case into ``into``.

    Every file is read and every case built before the first write, so a bad
    file among many leaves ``into`` as it was.
    """
    cases: list[InitCase] = []
    importable = list_files(
        paths, wanted=lambda p: not p.name.startswith("."), what="files to import"
    )
    for path in importable:
        blob = read_limited(path, "a blob")
        case = imported_case(blob, as_field, mode, with_material=with_material)
        # The material adds a few KiB: a blob just under the limit would make a
        # case file that load_case then refuses.
        if len(case.encode()) > MAX_CASE_BYTES:
            raise CorpusError(f"{path}: too large to import with the other material")
        cases.append(case)
    check_writable(into)
    new = sum(write_case(into, case)[1] for case in cases)
    return ImportResult(new, len(cases) - new)


def import_cases(paths: Sequence[Path], into: Path) -> ImportResult:
    """Copy the case files under ``paths`` into ``into`` (canonically encoded, content-named).

    All files are read before the first write, as in :func:`import_blobs`.
    """
    cases = [case for _path, case in load_cases(paths)]
    check_writable(into)
    new = sum(write_case(into, case)[1] for case in cases)
    return ImportResult(new, len(cases) - new)


# -- merge ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MergeResult:
    kept: int
    total: int
    new: int


def _smaller(a: tuple[bytes, InitCase] | None, b: tuple[bytes, InitCase]) -> bool:
    # Smallest encoding, then the bytes themselves: the same corpus always
    # merges to the same files, whatever order the folders were listed in.
    return a is None or (len(b[0]), b[0]) < (len(a[0]), a[0])


def merge_corpora(
    sources: Sequence[Path], into: Path, checker: Checker | None = None
) -> MergeResult:
    """Copy into ``into`` the smallest case of every distinct behaviour under ``sources``.

    Without ``checker`` a behaviour is a label set; with it, the outcome's
    status, step and sorted OpenSSL error reasons together with the label set,
    every finding signature (so a case that showed a finding is never merged
    away), and every coverage feature a fuzz campaign is guided by
    (:func:`tlsleak.fuzz.guidance.features`: error pairs and stacks, allocation
    buckets) is a behaviour of its own.
    """
    target = into.resolve()
    for source in sources:
        # Writing into a source would modify it (new files), which merge promises not to.
        if source.resolve() == target:
            raise CorpusError(f"{into}: is also a source; merge into a new folder")
    case_files(sources)  # a bad source is refused before anything is made
    check_writable(into)  # and a bad destination before the checks, which take minutes
    best: dict[tuple[object, ...], tuple[bytes, InitCase]] = {}
    total = 0
    for _path, case in load_cases(sources):
        total += 1
        data = case.encode()
        labels = tuple(sorted(case.labels))
        keys: list[tuple[object, ...]] = []
        if checker is None:
            keys.append(("labels", labels))
        else:
            verdict = checker.check(case)
            outcome = verdict.outcome
            reasons = tuple(sorted(str(e) for e in outcome.errors))
            keys.append(("outcome", str(outcome.status), outcome.step, reasons, labels))
            keys.extend(("finding", f.signature) for f in verdict.findings)
            # The campaign's own notion of coverage (error stacks, allocation
            # buckets): a merged corpus gives a new campaign the same start.
            keys.extend(("feature", f) for f in features(verdict))
        for key in keys:
            if _smaller(best.get(key), (data, case)):
                best[key] = (data, case)
    # One case can be the best of several behaviours: store it once.
    chosen = {data: case for data, case in best.values()}
    new = sum(write_case(into, case)[1] for case in chosen.values())
    return MergeResult(len(chosen), total, new)
