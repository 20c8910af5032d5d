"""fuzz --fail-alloc: the failing allocation is part of the input, and its findings replay.

Positive control: ``control_bionull.c`` crashes only when one allocation of
BIO_new near the end of a refused input's run fails; a campaign with
--fail-alloc must find that crash, store its fail point, and the stored
folder must replay it.  Negative controls: the same library without
--fail-alloc (nothing reaches the crash), and the fixed control with it.
Campaigns stop themselves on what they look for or after ``-runs=N``; the
``--time`` given is a bound a passing run never reaches.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tlsleak.cases.case import decode
from tlsleak.check.findings import load_stored
from tlsleak.cli import main
from tlsleak.fuzz import campaign as campaign_module
from tlsleak.fuzz.campaign import Campaign, CampaignOptions, CampaignStatus
from tlsleak.fuzz.child import Worker, worker_argv

GENEROUS = 300.0


def _stop_on_crash(box: list[Campaign]) -> object:
    def on_status(status: CampaignStatus) -> None:
        if any(f.kind == "crash" for f in status.findings):
            box[0].stop()

    return on_status


def test_a_fail_alloc_campaign_finds_the_crash_only_a_failed_allocation_reaches(
    c_controls: dict[str, Path], small_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    options = CampaignOptions(
        f"c:{c_controls['bionull']}",
        out,
        corpus=small_corpus,
        seconds=GENEROUS,
        minimize_budget=8,
        fail_alloc=True,
    )
    box: list[Campaign] = []
    messages: list[str] = []
    box.append(Campaign(options, on_status=_stop_on_crash(box), on_message=messages.append))  # type: ignore[arg-type]
    status = box[0].run()
    crashes = [f for f in status.findings if f.kind == "crash"]
    assert len(crashes) == 1, (status.findings, messages)  # one bug, however many restarts
    folder = crashes[0].folder
    assert folder is not None
    stored = load_stored(folder)
    point = stored.fail_point
    assert point is not None  # number and warm-up count, from a fresh process
    assert stored.finding.fail_at == point.fail_at
    assert 1 <= point.fail_at <= point.warmup_allocations
    # The reproducer names the allocation it fails, literally.
    assert decode((folder / "reproducer").read_bytes()).fail_alloc == point.fail_at
    assert json.loads((folder / "finding.json").read_text())["fail_point"] == point.to_json()
    assert main(["replay", str(folder), "--replays", "1"]) == 1


def test_without_fail_alloc_the_same_campaign_never_reaches_that_crash(
    c_controls: dict[str, Path], small_corpus: Path, tmp_path: Path
) -> None:
    options = CampaignOptions(
        f"c:{c_controls['bionull']}",
        tmp_path / "out",
        corpus=small_corpus,
        seconds=GENEROUS,
        minimize_budget=0,
        libfuzzer_flags=("-runs=1500",),
    )
    status = Campaign(options).run()
    assert status.execs >= 1500
    assert not [f for f in status.findings if f.kind == "crash"]
    assert not any(f.fail_at is not None for f in _stored_findings(tmp_path / "out"))


@pytest.mark.parametrize("control", ["control-fixed", "c:fixed"])
def test_a_fail_alloc_campaign_on_the_fixed_control_finds_nothing(
    control: str, c_controls: dict[str, Path], small_corpus: Path, tmp_path: Path
) -> None:
    # The Python control (typed objects made to fail) and the C one (heap blocks).
    target = f"c:{c_controls['fixed']}" if control == "c:fixed" else control
    options = CampaignOptions(
        target,
        tmp_path / "out",
        corpus=small_corpus,
        seconds=GENEROUS,
        minimize_budget=0,
        fail_alloc=True,
        libfuzzer_flags=("-runs=3000",),
    )
    status = Campaign(options).run()
    assert status.execs >= 3000
    if control == "control-fixed":
        assert status.findings == []
    else:
        # The C control leaves OpenSSL's "malloc failure" queued when the last
        # allocation of a refused run fails (after its own ERR_clear_error):
        # check --fail-alloc, which always fails the tail, reports it too.
        # The kinds the positive controls plant must not appear.
        assert not [f for f in status.findings if f.kind in ("crash", "leak")], status.findings
    # The inputs did carry fail points: the corpus kept some.
    kept = [decode(p.read_bytes()) for p in small_corpus.iterdir() if not p.name.startswith(".")]
    assert any(case.fail_alloc is not None for case in kept)


def _stored_findings(out: Path) -> list:  # type: ignore[type-arg]
    folder = out / "findings"
    return [load_stored(p).finding for p in folder.iterdir() if not p.name.startswith(".")]


# --- the option, end to end ---------------------------------------------------------------


def test_the_workers_get_fail_alloc_only_when_asked(tmp_path: Path) -> None:
    worker = Worker(0, tmp_path / "w0", tmp_path / "w0.log")
    asked = worker_argv(CampaignOptions("t", tmp_path, fail_alloc=True), worker, None, 3)
    assert "--fail-alloc" in asked[: asked.index("--")]
    assert "--fail-alloc" not in worker_argv(CampaignOptions("t", tmp_path), worker, None, 3)


def test_fail_alloc_on_a_target_no_ledger_can_fail_is_one_line_and_exit_2(
    small_corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # As when the heap interposer is not preloaded: the checker can fail nothing.
    class NoInjector(campaign_module.IsolatedOracle):  # type: ignore[misc,name-defined]
        def start(self) -> NoInjector:
            super().start()
            self.can_fail_allocations = False
            return self

    monkeypatch.setattr(campaign_module, "IsolatedOracle", NoInjector)
    argv = ["fuzz", "control-fixed", "--corpus", str(small_corpus), "--out", str(tmp_path / "o")]
    assert main([*argv, "--fail-alloc", "-q", "--", "-runs=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("tlsleak: error: --fail-alloc: no ledger of target control-fixed")
    assert sys.exc_info() == (None, None, None)
