"""Findings count when a fresh worker gives them alone (tlsleak.check.alone).

Unit tests on a fake worker say exactly which signatures a fresh process
gives.  The command-line tests use a user init path with state: a case that
"arms" it makes every later case of another kind lose a heap block, which
that case alone never does (as gRPC's leaked servers make later client
attempts keep blocks).  Positive control: a leak the case makes by itself
still counts, and releases the findings held for its signature.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import write_case
from tlsleak.check.alone import TRIES, Alone
from tlsleak.check.verdict import Finding, FindingKind, Verdict
from tlsleak.cli import main
from tlsleak.targets.base import Outcome

# -- Alone, on a fake fresh worker ---------------------------------------------------


class _Fresh:
    """A fresh worker that gives the findings of ``gives`` (signature by server name)."""

    started = 0

    def __init__(self, gives: dict[bytes, Finding]) -> None:
        self.gives = gives

    def start(self) -> _Fresh:
        _Fresh.started += 1
        return self

    def check(self, case: InitCase) -> Verdict:
        found = self.gives.get(case.server_name)
        return Verdict(case, Outcome.accepted(), (found,) if found else ())

    def close(self) -> None: ...


def _finding(name: bytes, **changes: object) -> Finding:
    case = InitCase(server_name=name)
    leak = Finding(FindingKind.LEAK, "fake", case, Outcome.accepted(), delta={"heap.blocks": 1})
    return replace(leak, **changes)


def _alone(gives: dict[bytes, Finding]) -> Alone:
    return Alone(lambda: _Fresh(gives))  # type: ignore[arg-type, return-value]


def test_a_finding_a_fresh_worker_gives_counts_and_its_signature_is_not_tried_again() -> None:
    leak = _finding(b"a")
    alone = _alone({b"a": leak})
    _Fresh.started = 0
    assert alone.admit(Path("a"), leak) == [(Path("a"), leak)]
    assert alone.admit(Path("b"), leak) == [(Path("b"), leak)]
    assert _Fresh.started == 1
    assert alone.unconfirmed == []


def test_growth_no_fresh_worker_gives_is_held_after_tries_cases() -> None:
    leak = _finding(b"after")
    alone = _alone({})
    _Fresh.started = 0
    for i in range(TRIES + 2):
        assert alone.admit(Path(str(i)), leak) == []
    assert _Fresh.started == TRIES
    assert len(alone.unconfirmed) == TRIES + 2


def test_a_later_case_that_gives_it_alone_releases_the_held_ones() -> None:
    held, alone_too = _finding(b"after"), _finding(b"always")
    assert held.signature == alone_too.signature
    alone = _alone({b"always": alone_too})
    assert alone.admit(Path("1"), held) == []
    assert alone.admit(Path("2"), alone_too) == [(Path("2"), alone_too), (Path("1"), held)]
    assert alone.unconfirmed == []


def test_allocation_failures_and_timeouts_pass_straight_through() -> None:
    alone = _alone({})
    _Fresh.started = 0
    failing = _finding(b"x", fail_at=3)
    slow = _finding(b"y", kind=FindingKind.TIMEOUT)
    assert alone.admit(Path("f"), failing) == [(Path("f"), failing)]
    assert alone.admit(Path("t"), slow) == [(Path("t"), slow)]
    assert _Fresh.started == 0


# -- through the command line ----------------------------------------------------------

@pytest.fixture
def stateful(stateful_init: str, tmp_path: Path) -> dict[str, Path]:
    """One case file each for the stateful init path (tests/conftest.py STATEFUL)."""
    files = {}
    for name in ("arm", "after", "always"):
        folder = tmp_path / name
        folder.mkdir()
        files[name], _new = write_case(folder, InitCase(server_name=name.encode()))
    return files


def _check(files: list[Path], report: Path) -> tuple[int, dict[str, object]]:
    argv = ["check", "stateful_init_xyz:init", *map(str, files), "--ledger", "heap"]
    status = main([*argv, "--json", str(report)])
    data: dict[str, object] = json.loads(report.read_text())
    return status, data


def test_growth_only_after_another_case_is_reported_apart_and_does_not_gate(
    stateful: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, data = _check([stateful["arm"], stateful["after"]], tmp_path / "r.json")
    out = capsys.readouterr().out
    assert status == 0
    assert data["findings"] == []
    assert isinstance(data["unconfirmed"], list)
    assert len(data["unconfirmed"]) == 1
    assert "not counted: 1 finding that a fresh worker did not give alone" in out


def test_a_leak_the_case_makes_alone_counts_and_releases_the_held_one(
    stateful: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [stateful["arm"], stateful["after"], stateful["always"]]
    status, data = _check(files, tmp_path / "r.json")
    assert status == 1
    assert isinstance(data["findings"], list)
    assert [Path(f["file"]).parent.name for f in data["findings"]] == ["always", "after"]
    assert "unconfirmed" not in data
    assert "not counted: 1 finding" not in capsys.readouterr().out


def test_a_fresh_worker_that_cannot_tell_leaves_the_finding_counted() -> None:
    # A target that refuses to load again (after a crash): nothing to compare.
    from tlsleak.check.worker import WorkerError

    class _Broken(_Fresh):
        def start(self) -> _Fresh:
            raise WorkerError("will not start again")

    leak = _finding(b"a")
    alone = Alone(lambda: _Broken({}))  # type: ignore[arg-type, return-value]
    assert alone.admit(Path("a"), leak) == [(Path("a"), leak)]


def test_a_leak_one_check_of_the_fresh_worker_misses_is_still_confirmed() -> None:
    # A block a run near another thread's noise: the fresh worker's first
    # check nets nothing, its second finds it (check.alone.CHECKS).
    from tlsleak.check.alone import CHECKS

    leak = _finding(b"noisy")

    class _Late(_Fresh):
        checks = 0

        def check(self, case: InitCase) -> Verdict:
            _Late.checks += 1
            return super().check(case) if _Late.checks > 1 else Verdict(case, Outcome.accepted())

    alone = Alone(lambda: _Late({b"noisy": leak}))  # type: ignore[arg-type, return-value]
    assert CHECKS > 1
    assert alone.admit(Path("n"), leak) == [(Path("n"), leak)]
    assert _Late.checks == 2
