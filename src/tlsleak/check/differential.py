"""Differential acceptance: the same cases through several TLS stacks, and where they differ.

Stacks disagree on what to accept (an RSA key with e = 1, an EC key whose
scalar is zero, a certificate armored as ``TRUSTED CERTIFICATE``).  A
:class:`Differ` runs each case through every target, each in its own
:class:`~tlsleak.check.worker.IsolatedOracle` child with no ledgers (off the
network, and a crash of one stack on one case is that stack's ``crash`` on
that case, not the end of the run), and keeps one :class:`Row` per case.

Before the cases, each target is given one valid case per kind of material
(:mod:`tlsleak.check.capabilities`): a case whose material a target cannot
load even when valid is ``unsupported`` for that target, is not run on it,
and takes no part in the comparison.  A case is compared over the targets
that support it, when there are at least two; it is then:

- a **disagreement** when their statuses differ (accepted, rejected, error,
  crash, timeout): one stack takes what another refuses, or fails on it;
- a **step difference** (weaker) when every one rejects it, at different
  steps: the same verdict, reached by parsers that look at different things
  first (a key rejected when loaded by one, when paired with the certificate
  by another);
- an **agreement** otherwise.

Rows group by defect label and the outcome of every target (:func:`groups`),
so one root cause reads as one line however many cases carry it.
"""

from __future__ import annotations

import enum
import importlib
import importlib.metadata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from tlsleak._netns import Network
from tlsleak.cases.case import InitCase
from tlsleak.check.capabilities import Material, material_of, probes, supports
from tlsleak.check.oracle import FindingKind, Verdict
from tlsleak.check.worker import DEFAULT_TIMEOUT, IsolatedOracle

__all__ = [
    "FORMAT",
    "Differ",
    "Group",
    "Kind",
    "Result",
    "Row",
    "TargetInfo",
    "groups",
    "stack_version",
    "summary",
]

#: The ``format`` of a ``tlsleak diff --json`` report.
FORMAT: Final = "tlsleak-diff/1"

UNSUPPORTED: Final = "unsupported"


class Kind(enum.StrEnum):
    """How the targets that support a case compare on it."""

    DISAGREE = "disagreement"
    STEPS = "step-difference"
    AGREE = "agreement"
    #: Fewer than two targets support the case: nothing to compare.
    UNCOMPARED = "uncompared"


@dataclass(frozen=True, slots=True)
class Result:
    """How one case ended on one target: a status, the step it was refused at, a detail."""

    status: str
    step: str | None = None
    detail: str = ""

    @classmethod
    def of(cls, verdict: Verdict) -> Result:
        kinds = {f.kind for f in verdict.findings}
        outcome = verdict.outcome
        for kind in (FindingKind.CRASH, FindingKind.TIMEOUT):
            if kind in kinds:  # the worker's own verdict: the outcome is a placeholder
                return cls(str(kind), None, outcome.message)
        detail = next(iter(outcome.describe().splitlines()), "")[:200]
        return cls(str(outcome.status), outcome.step, detail)

    @property
    def supported(self) -> bool:
        return self.status != UNSUPPORTED

    def cell(self) -> str:
        """The result in a table cell: ``rejected at key``, ``accepted``, ``unsupported``."""
        return f"{self.status} at {self.step}" if self.step else self.status

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "step": self.step, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Row:
    """One case, and its result on every target (in the targets' order)."""

    name: str
    labels: tuple[str, ...]
    results: tuple[Result, ...]

    @property
    def kind(self) -> Kind:
        compared = [r for r in self.results if r.supported]
        if len(compared) < 2:
            return Kind.UNCOMPARED
        if len({r.status for r in compared}) > 1:
            return Kind.DISAGREE
        if compared[0].status == "rejected" and len({r.step for r in compared}) > 1:
            return Kind.STEPS
        return Kind.AGREE

    @property
    def supported_by_all(self) -> bool:
        return all(r.supported for r in self.results)

    @property
    def label(self) -> str:
        """The defect labels, or ``-`` for a case that carries none (a fuzzer's find)."""
        return ",".join(self.labels) or "-"

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.name,
            "labels": list(self.labels),
            "kind": str(self.kind),
            "results": [r.to_json() for r in self.results],
        }


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """One target of the comparison: its name, the material it loads, how it ran."""

    spec: str
    name: str
    loads: dict[Material, bool]
    network: Network | None = None
    version: str | None = None

    def cannot_load(self) -> list[Material]:
        return sorted(m for m, ok in self.loads.items() if not ok)

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "name": self.name,
            "version": self.version,
            "network": None if self.network is None else self.network.to_json(),
            "cannot_load": [str(m) for m in self.cannot_load()],
        }


@dataclass(frozen=True, slots=True)
class Group:
    """Cases of one defect label with the same outcome on every target that supports them.

    ``cells`` is each target's outcome (a case unsupported there still joins
    the group: ``unsupported[i]`` counts those cases for target ``i``).
    """

    kind: Kind
    label: str
    cells: tuple[str, ...]
    cases: tuple[str, ...]
    unsupported: tuple[int, ...]

    def shown(self) -> tuple[str, ...]:
        """The cells for a table: ``accepted (2 unsupported)`` where some cases were not run."""
        return tuple(
            cell if not n or n == len(self.cases) else f"{cell} ({n} unsupported)"
            for cell, n in zip(self.cells, self.unsupported, strict=True)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "results": list(self.cells),
            "unsupported": list(self.unsupported),
            "cases": list(self.cases),
        }


def groups(rows: Iterable[Row], kind: Kind) -> list[Group]:
    """The rows of ``kind`` grouped by label and outcomes: the largest group first.

    A case unsupported on some targets joins the group whose outcomes it
    shares on the others, so one behaviour is one group whichever targets
    could load each of its cases.
    """
    found: list[tuple[str, list[str], list[Row]]] = []
    wanted = [row for row in rows if row.kind is kind]
    # Fully supported cases first: they set each group's outcomes.
    for row in sorted(wanted, key=lambda r: (sum(not x.supported for x in r.results), r.name)):
        cells = [r.cell() for r in row.results]
        for label, known, members in found:
            if label == row.label and all(
                UNSUPPORTED in (a, b) or a == b for a, b in zip(known, cells, strict=True)
            ):
                known[:] = [b if a == UNSUPPORTED else a for a, b in zip(known, cells, strict=True)]
                members.append(row)
                break
        else:
            found.append((row.label, cells, [row]))
    made = [
        Group(
            kind,
            label,
            tuple(known),
            tuple(sorted(r.name for r in members)),
            tuple(sum(not r.results[i].supported for r in members) for i in range(len(known))),
        )
        for label, known, members in found
    ]
    return sorted(made, key=lambda g: (-len(g.cases), g.label, g.cells))


def summary(targets: Sequence[TargetInfo], rows: Sequence[Row]) -> dict[str, Any]:
    """The figures of a comparison: how many cases, compared, disagreeing, per target."""
    kinds = Counter(row.kind for row in rows)
    everywhere = [row for row in rows if row.supported_by_all]
    per_target = {
        info.name: dict(sorted(Counter(row.results[i].status for row in rows).items()))
        for i, info in enumerate(targets)
    }
    return {
        "cases": len(rows),
        "compared": len(rows) - kinds[Kind.UNCOMPARED],
        "supported_by_all": len(everywhere),
        "disagreements": kinds[Kind.DISAGREE],
        "disagreements_supported_by_all": sum(r.kind is Kind.DISAGREE for r in everywhere),
        "step_differences": kinds[Kind.STEPS],
        "agreements": kinds[Kind.AGREE],
        "statuses": per_target,
    }


class Differ:
    """Runs cases through several targets, each in a child process with no ledgers.

    :meth:`start` starts every child (a target that cannot start raises
    :class:`~tlsleak.check.worker.WorkerError`, before any case runs) and
    probes what each can load; :meth:`compare` gives one case's :class:`Row`.
    """

    def __init__(
        self, specs: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, python: str | None = None
    ) -> None:
        if len(specs) < 2:
            raise ValueError(f"a comparison needs at least two targets, not {len(specs)}")
        self.specs = list(specs)
        # python: every target under that interpreter (--python, docs/python.md).
        self.oracles = [
            IsolatedOracle(s, ledgers=[], timeout=timeout, python=python) for s in self.specs
        ]
        self.targets: list[TargetInfo] = []

    def start(self) -> Differ:
        try:
            for oracle in self.oracles:
                oracle.start()
            self.targets = self._probe()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for oracle in self.oracles:
            oracle.close()

    def __enter__(self) -> Differ:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def failure(self) -> str | None:
        """Why a target can check no more cases (its child died and could not restart)."""
        return next((o.failure for o in self.oracles if o.failure is not None), None)

    def _probe(self) -> list[TargetInfo]:
        valid = probes()
        names = _distinct([o.target_name for o in self.oracles])
        infos = []
        for spec, name, oracle in zip(self.specs, names, self.oracles, strict=True):
            loads = {m: Result.of(oracle.check(case)).status == "accepted" for m, case in valid}
            infos.append(TargetInfo(spec, name, loads, oracle.network, stack_version(spec)))
        return infos

    def compare(self, case: InitCase, name: str) -> Row:
        """``case`` through every target that can load its material."""
        seen = material_of(case)
        results = []
        for info, oracle in zip(self.targets, self.oracles, strict=True):
            if supports(info.loads, seen):
                results.append(Result.of(oracle.check(case)))
            else:
                results.append(Result(UNSUPPORTED))
        return Row(name, case.labels, tuple(results))


def _distinct(names: Sequence[str]) -> list[str]:
    """``names`` with repeats numbered (``ssl``, ``ssl#2``): columns need distinct names."""
    seen: Counter[str] = Counter()
    out = []
    for name in names:
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


#: What decides each built-in stack's acceptance: (distribution, module, version attribute).
_STACKS: Final[dict[str, tuple[tuple[str, str | None, str | None], ...]]] = {
    "pyopenssl": (
        ("pyOpenSSL", None, None),
        ("cryptography", "cryptography.hazmat.backends.openssl", "backend.openssl_version_text"),
    ),
    "ssl": (("", "ssl", "OPENSSL_VERSION"),),
    "mbedtls": (("python-mbedtls", "mbedtls.version", "version"),),
    "grpc": (("grpcio", None, None),),
    "mongoose": (("cymongoose", None, None),),
}


def stack_version(spec: str) -> str | None:
    """The versions that decide what built-in target ``spec`` accepts; None for others.

    The Python binding's version, and the TLS library's own where it reports
    one (the OpenSSL in cryptography's wheel, the system OpenSSL behind ``ssl``,
    the Mbed TLS bundled with python-mbedtls).
    """
    parts = []
    for distribution, module, attribute in _STACKS.get(spec, ()):
        try:
            if distribution:
                parts.append(f"{distribution} {importlib.metadata.version(distribution)}")
            if module is not None and attribute is not None:
                value: Any = importlib.import_module(module)
                for name in attribute.split("."):
                    value = getattr(value, name)
                parts.append(str(value() if callable(value) else value))
        except (ImportError, importlib.metadata.PackageNotFoundError, AttributeError):
            parts.append(f"{distribution or module} (not installed)")
    return ", ".join(parts) or None
