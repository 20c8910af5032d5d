"""A campaign's finding counts once a fresh checker gives it alone (fuzz.desk, check.alone).

Unit tests drive the desk with a fake fresh checker that says exactly which
inputs give a signature alone.  The campaigns use a user init path with
state (as tests/check/test_alone.py): an input that "arms" it makes every
later ``after`` input lose a heap block, which that input alone never does
(as gRPC's leaked servers make later client attempts keep blocks).  The
worker runs both from its seed corpus; the fresh checker runs one input and
never arms.  Positive control: an input that leaks by itself is still found,
stored, and replays "still there".  Campaigns end after ``-runs=N``.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import write_case
from tlsleak.check.alone import TRIES
from tlsleak.check.findings import FindingStore, load_finding
from tlsleak.check.verdict import Finding, FindingKind, Verdict
from tlsleak.check.worker import WorkerError
from tlsleak.cli import main
from tlsleak.cli.fuzz import campaign_exit
from tlsleak.fuzz.desk import Desk
from tlsleak.fuzz.progress import status_line, unconfirmed_lines
from tlsleak.fuzz.stats import CampaignStatus, FindingRecord, Stats
from tlsleak.reports.ci import from_campaign
from tlsleak.targets.base import Outcome

# -- the desk, on a fake fresh checker ------------------------------------------------


class _Fresh:
    """A fresh checker that gives the leak on the inputs named in ``gives`` (None: on all)."""

    def __init__(self, gives: set[bytes] | None, log: list[bytes], *, broken: bool = False) -> None:
        self.gives, self.log, self.broken = gives, log, broken
        self.checked: set[bytes] = set()

    def start(self) -> _Fresh:
        if self.broken:
            raise WorkerError("will not start again")
        return self

    def check(self, case: InitCase) -> Verdict:
        # The log names each input a fresh checker was given once, however
        # many times it checks it (check.alone.CHECKS).
        if case.server_name not in self.checked:
            self.checked.add(case.server_name)
            self.log.append(case.server_name)
        gives = self.gives is None or case.server_name in self.gives
        found = _leak(case.server_name) if gives else None
        return Verdict(case, Outcome.accepted(), (found,) if found else ())

    def close(self) -> None: ...


class _Checker:
    """The desk's own checker, which has run other inputs: it gives the leak on any input."""

    target_name = "fake"

    def check(self, case: InitCase, *, fail_at: int | None = None) -> Verdict:
        found = replace(_leak(case.server_name), case=case)
        return Verdict(case, Outcome.accepted(), (found,))


def _leak(name: bytes) -> Finding:
    case = InitCase(server_name=name)
    return Finding(FindingKind.LEAK, "fake", case, Outcome.accepted(), delta={"heap.blocks": 1})


MakeDesk = Callable[..., Desk]


@pytest.fixture
def desk_for(tmp_path: Path) -> Iterator[MakeDesk]:
    """Makes a desk (no minimising) whose fresh checkers are :class:`_Fresh`; stops them."""
    desks: list[Desk] = []

    def make(
        gives: set[bytes] | None, log: list[bytes], *, broken: bool = False, budget: int = 0
    ) -> Desk:
        desk = Desk(
            FindingStore(tmp_path / "findings"),
            _Checker(),  # type: ignore[arg-type]
            budget,
            fresh=lambda: _Fresh(gives, log, broken=broken),  # type: ignore[arg-type, return-value]
        )
        desks.append(desk)
        return desk

    yield make
    for desk in desks:
        desk.finish(hurry=True)


def _folders(tmp_path: Path) -> list[Path]:
    findings = tmp_path / "findings"
    if not findings.exists():
        return []
    return [p for p in findings.iterdir() if not p.name.startswith(".")]


def test_a_finding_a_fresh_checker_gives_alone_is_stored(
    desk_for: MakeDesk, tmp_path: Path
) -> None:
    log: list[bytes] = []
    desk = desk_for({b"a"}, log)
    desk.offer(_leak(b"a"))
    desk.offer(_leak(b"b"))  # a later worker's input: not tried once stored
    desk.finish(hurry=False)
    (record,) = desk.records.values()
    assert not record.unconfirmed
    assert record.folder is not None
    assert log == [b"a"]
    assert len(_folders(tmp_path)) == 1


def test_no_input_given_alone_is_unconfirmed_with_no_folder(
    desk_for: MakeDesk, tmp_path: Path
) -> None:
    log: list[bytes] = []
    desk = desk_for(set(), log)
    for name in (b"a", b"a", b"b", b"c", b"d", b"e"):
        desk.offer(_leak(name))  # each a worker's first report
    desk.finish(hurry=False)
    (record,) = desk.records.values()
    assert record.unconfirmed
    assert record.folder is None
    assert record.count == 6
    assert log == [b"a", b"b", b"c"][:TRIES]  # distinct inputs, at most TRIES
    assert _folders(tmp_path) == []


def test_a_later_input_given_alone_confirms_and_is_stored(
    desk_for: MakeDesk, tmp_path: Path
) -> None:
    log: list[bytes] = []
    desk = desk_for({b"b"}, log)
    desk.offer(_leak(b"a"))
    desk.offer(_leak(b"b"))
    desk.finish(hurry=False)
    (record,) = desk.records.values()
    assert not record.unconfirmed
    assert record.folder is not None
    assert log == [b"a", b"b"]
    stored = json.loads((record.folder / "finding.json").read_text())
    assert stored["count"] == 2
    _finding, reproducer = load_finding(record.folder)
    assert reproducer.server_name == b"b"  # the input given alone, not the first one


def test_a_fresh_checker_that_cannot_tell_leaves_it_counted(
    desk_for: MakeDesk, tmp_path: Path
) -> None:
    desk = desk_for(set(), [], broken=True)
    desk.offer(_leak(b"a"))
    desk.finish(hurry=False)
    (record,) = desk.records.values()
    assert not record.unconfirmed
    assert record.folder is not None


_ORIGINAL = InitCase(server_name=b"orig", cert=b"junk that minimising drops")


@pytest.mark.parametrize("fresh_gives_the_shrunk_one", [False, True])
def test_a_reproducer_shrunk_in_the_checker_is_kept_only_if_a_fresh_one_gives_it(
    desk_for: MakeDesk, tmp_path: Path, fresh_gives_the_shrunk_one: bool
) -> None:
    log: list[bytes] = []
    desk = desk_for(None if fresh_gives_the_shrunk_one else {b"orig"}, log, budget=40)
    desk.offer(replace(_leak(b"orig"), case=_ORIGINAL))
    desk.finish(hurry=False)
    (record,) = desk.records.values()
    assert record.folder is not None
    _finding, reproducer = load_finding(record.folder)
    assert len(log) == 2  # the input, then its shrunk reproducer
    assert record.minimized is fresh_gives_the_shrunk_one
    if fresh_gives_the_shrunk_one:
        assert reproducer.size < _ORIGINAL.size
    else:
        assert reproducer == _ORIGINAL  # what was confirmed alone


def test_timeouts_are_stored_without_a_try_alone(desk_for: MakeDesk, tmp_path: Path) -> None:
    log: list[bytes] = []
    desk = desk_for(set(), log)
    desk.offer(replace(_leak(b"slow"), kind=FindingKind.TIMEOUT, delta={}))
    desk.finish(hurry=False)
    (record,) = desk.records.values()
    assert record.folder is not None
    assert log == []


# -- the status, exit status and CI reports keep unconfirmed records apart --------------


def _status(records: list[FindingRecord]) -> CampaignStatus:
    stats = Stats(Path("/nonexistent"), lambda _m: None)
    return stats.status(
        target="t",
        started=0.0,
        workers=[],
        findings=records,
        corpus=1,
        corpus_added=0,
        stopping=False,
    )


def test_unconfirmed_records_are_apart_and_never_gate() -> None:
    apart = FindingRecord("leak-x", "leak", "-", "heap.blocks +1", count=7, unconfirmed=True)
    status = _status([apart])
    assert status.findings == []
    assert status.unconfirmed == [apart]
    line = status.to_json()
    assert line["findings"] == {}
    assert line["finding_hits"] == 0
    assert line["unconfirmed"] == {"leak": 1}
    assert "(+1 unconfirmed)" in status_line(status)
    assert "leak-x: seen 7 times" in unconfirmed_lines(status)
    assert campaign_exit(status, None, frozenset(FindingKind)) == 0
    assert from_campaign([apart], "t") == []
    # Negative control: a counted one gates, and no unconfirmed field is written.
    counted = replace(apart, unconfirmed=False)
    status = _status([counted])
    assert "unconfirmed" not in status.to_json()
    assert unconfirmed_lines(status) == ""
    assert campaign_exit(status, None, frozenset(FindingKind)) == 1


# -- campaigns on an init path with state -----------------------------------------------------

@pytest.fixture
def stateful(stateful_init: str) -> str:
    """The stateful init path (tests/conftest.py STATEFUL), importable by workers and checkers."""
    pytest.importorskip("atheris")
    return stateful_init


def _fuzz(target: str, tmp_path: Path, seeds: tuple[bytes, ...]) -> tuple[int, Path]:
    corpus = tmp_path / "corpus"
    for name in seeds:
        write_case(corpus, InitCase(server_name=name))
    out = tmp_path / "out"
    argv = ["fuzz", target, "--out", str(out), "--corpus", str(corpus), "-q", "--seed", "1"]
    argv += ["--minimize-budget", "20", "--summary-md", str(tmp_path / "summary.md")]
    return main([*argv, "--", "-runs=300"]), out


SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "tlsleak-stats-1.schema.json"


def _last_stats(out: Path) -> dict[str, object]:
    lines = (out / "stats.jsonl").read_text().splitlines()
    last: dict[str, object] = json.loads(lines[-1])
    return last


def test_growth_only_after_another_input_is_unconfirmed_not_stored_exit_0(
    stateful: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = _fuzz(stateful, tmp_path, (b"arm", b"after"))
    printed = capsys.readouterr().out
    last = _last_stats(out)
    assert status == 0, printed
    assert last["unconfirmed"] == {"leak": 1}
    assert last["findings"] == {}
    assert _folders(out) == []
    assert "not counted: 1 finding that a fresh worker did not give alone" in printed
    schema = json.loads(SCHEMA.read_text())
    assert "unconfirmed" in schema["properties"]
    assert list(Draft202012Validator(schema).iter_errors(last)) == []
    summary = (tmp_path / "summary.md").read_text()
    assert "not counted: leak" in summary
    if importlib.util.find_spec("pygal") is not None:  # the HTML page: apart, not a finding
        page = tmp_path / "page.html"
        assert main(["report", str(out), "--html", str(page)]) == 0
        html = page.read_text()
        assert "Not counted (leak 1)" in html
        assert "Findings (0)" in html


def test_a_leak_an_input_makes_alone_is_stored_and_replays(
    stateful: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = _fuzz(stateful, tmp_path, (b"arm", b"always"))
    printed = capsys.readouterr().out
    last = _last_stats(out)
    assert status == 1, printed
    assert last["findings"] == {"leak": 1}
    assert "unconfirmed" not in last
    (folder,) = _folders(out)
    assert main(["replay", str(folder)]) == 1  # still there
