"""A campaign's exit status, counts and scratch tell the truth.

No work done is exit status 2 with one line saying why; executions count
across worker restarts and ``-runs=N``; the workers' scratch (it holds
private keys) is private and removed.  Every campaign here is bounded by
``-runs=N``, by stopping itself on a condition, or by a generous ``--time``
that a passing run never reaches: nothing depends on the machine's speed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import write_case
from tlsleak.check.worker import IsolatedOracle
from tlsleak.cli import main
from tlsleak.fuzz import MAX_JOBS
from tlsleak.fuzz import campaign as campaign_module
from tlsleak.fuzz.campaign import Campaign, CampaignError, CampaignOptions, CampaignStatus
from tlsleak.fuzz.progress import status_line, summary_title
from tlsleak.fuzz.shared_corpus import SharedCorpus

#: Long enough never to be what ends a campaign that works.
GENEROUS = "300"


def _corpus(folder: Path, *cases: InitCase) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for case in cases:
        write_case(folder, case)
    return folder


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# --- --fail-on ------------------------------------------------------------------------------


def test_fuzz_honours_fail_on(
    tmp_path: Path, c_controls: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # The fixed C control that leaves OpenSSL's errors queued when it rejects:
    # an error-queue finding on the first input, and no leak.
    corpus = _corpus(tmp_path / "corpus", InitCase(cert=b"not a certificate"))
    argv = ["fuzz", f"c:{c_controls['fixed-keep-errors']}", "--corpus", str(corpus), "-q"]
    flags = ["--", "-runs=20"]
    # Positive control: every kind fails, so the error-queue finding does.
    assert main([*argv, "--out", str(tmp_path / "all"), *flags]) == 1
    assert "error-queue" in capsys.readouterr().out
    # Gated on leaks and crashes only: the same finding is listed, exit 0.
    gated = ["--out", str(tmp_path / "gated"), "--fail-on", "leak,crash"]
    assert main([*argv, *gated, *flags]) == 0
    out = capsys.readouterr().out
    assert "error-queue" in out
    assert "20 executions" in out


# --- no work done is exit status 2 ---------------------------------------------------------


def test_a_missing_dictionary_is_no_work_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # libFuzzer refuses to start without its dictionary: before, each worker
    # was restarted until --time ran out and the campaign said "no findings", 0.
    out = tmp_path / "out"
    argv = ["fuzz", "control-leaky", "--out", str(out), "--time", GENEROUS, "-q"]
    assert main([*argv, "--", "-dict=/missing.dict"]) == 2
    captured = capsys.readouterr()
    assert "0 executions" in captured.out
    last = _last_line(captured.err)
    assert last.startswith("tlsleak: error: no work done: every worker was given up"), last
    assert "ParseDictionaryFile" in last  # the worker log's last line says why
    stats = json.loads((out / "stats.jsonl").read_text().splitlines()[-1])
    assert stats["execs"] == 0
    assert "given up" in stats["no_work"]


def test_every_worker_lost_is_no_work_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A full disk under --out: no worker's folder can be filled.  Even on the
    # leaky control, whose leak every input shows, this is no work, not "clean".
    def full(_self: SharedCorpus, _worker: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(SharedCorpus, "seed", full)
    argv = ["fuzz", "control-leaky", "--out", str(tmp_path / "out"), "--time", GENEROUS]
    assert main([*argv, "--jobs", "2", "-q"]) == 2
    last = _last_line(capsys.readouterr().err)
    assert "no work done: every worker was given up" in last
    assert "No space left on device" in last


def test_runs_n_counts_every_execution(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # libFuzzer ends the worker itself after -runs=N: its last counts must
    # still arrive (they used to be lost: "0 executions", exit 0).
    corpus = _corpus(tmp_path / "corpus")  # empty: no seed corpus to run first
    options = CampaignOptions(
        "control-fixed", tmp_path / "out", corpus=corpus, libfuzzer_flags=("-runs=25",)
    )
    status = Campaign(options).run()
    assert status.execs == 25
    assert status.workers[0].state == "finished"
    assert status.no_work is None
    argv = ["fuzz", "control-fixed", "--corpus", str(corpus), "--out", str(tmp_path / "cli")]
    assert main([*argv, "-q", "--", "-runs=7"]) == 0
    assert "7 executions" in capsys.readouterr().out


def test_time_counts_from_launch_start_up_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A start-up that takes longer than --time: no worker is started at all,
    # and the campaign says it did no work.
    start = IsolatedOracle.start

    def slow_start(self: IsolatedOracle) -> IsolatedOracle:
        time.sleep(1.5)
        return start(self)

    monkeypatch.setattr(IsolatedOracle, "start", slow_start)
    out = tmp_path / "out"
    assert main(["fuzz", "control-fixed", "--out", str(out), "--time", "1", "-q"]) == 2
    last = _last_line(capsys.readouterr().err)
    assert "no input was executed within --time 1s" in last
    assert not list((out / "workers").iterdir())  # no worker was started


# --- counts across restarts -----------------------------------------------------------------


def test_executions_are_counted_across_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A target that aborts on every 30th input of a process: each worker life
    # runs exactly 30 (libFuzzer counts the fatal one), and dies before it can
    # report them.  The campaign used to say "1 executions" after 146 restarts.
    (tmp_path / "aborting.py").write_text(
        textwrap.dedent(
            """
            import os

            calls = 0

            def every_30th(case):
                global calls
                calls += 1
                if calls % 30 == 0:
                    os.abort()
            """
        )
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    corpus = _corpus(tmp_path / "corpus", InitCase())
    options = CampaignOptions(
        "aborting:every_30th", tmp_path / "out", corpus=corpus, seconds=int(GENEROUS)
    )
    shown: list[CampaignStatus] = []

    def on_status(status: CampaignStatus) -> None:
        shown.append(status)
        if status.restarts >= 3:
            campaign.stop(hurry=True)

    campaign = Campaign(options, on_status=on_status, status_every=0.2)
    status = campaign.run()
    assert status.restarts >= 3
    # 30 calls per life; a life's first input may be replayed 5 times (the
    # process heap sees the interpreter's first-time caches grow), so at
    # least 24 of them are executions of their own.
    assert status.execs >= 24 * status.restarts
    assert status.no_work is None
    # The restart rate is shown, live and in the summary.
    assert "restarts (" in status_line(shown[-1])
    assert "worker restarts (" in summary_title(status)
    last = json.loads((tmp_path / "out" / "stats.jsonl").read_text().splitlines()[-1])
    assert last["restarts"] == status.restarts


# --- resources: --jobs, progress --------------------------------------------------------------


def test_jobs_above_the_cores_warn_and_above_the_maximum_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = _corpus(tmp_path / "corpus")
    flags = ("-runs=3",)
    for cores, jobs, warned in ((1, 2, True), (2, 2, False)):
        monkeypatch.setattr(campaign_module, "usable_cores", lambda cores=cores: cores)
        messages: list[str] = []
        out = tmp_path / f"out{cores}"
        options = CampaignOptions(
            "control-fixed", out, corpus=corpus, jobs=jobs, libfuzzer_flags=flags
        )
        Campaign(options, on_message=messages.append).run()
        warning = f"--jobs 2 is more than the {cores} cores available: the workers will share"
        assert [m for m in messages if "cores" in m] == (
            [f"{warning} them, each slower"] if warned else []
        )
    too_many = str(MAX_JOBS + 1)
    assert main(["fuzz", "control-fixed", "--out", str(tmp_path / "x"), "--jobs", too_many]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"from 1 to {MAX_JOBS}" in err


def test_progress_is_shown_from_start_up_to_the_end(tmp_path: Path) -> None:
    shown: list[CampaignStatus] = []
    options = CampaignOptions(
        "control-fixed",
        tmp_path / "out",
        corpus=_corpus(tmp_path / "corpus"),
        jobs=2,
        libfuzzer_flags=("-runs=5",),
    )
    Campaign(options, on_status=shown.append).run()
    first, last = shown[0], shown[-1]
    assert first.starting
    assert first.execs == 0
    assert [w.state for w in first.workers] == ["starting", "starting"]
    assert status_line(first).startswith("starting: ")
    assert last.stopping


def test_corpus_grow_by_fuzzing_shows_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "grown"
    assert main(["corpus", "grow", str(folder), "--fuzz", "control-fixed", "--time", "3"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith("starting: ") for line in err), err
    assert any(line.startswith("stopping: ") for line in err), err


# --- key hygiene: the workers' scratch ------------------------------------------------------


def _start(argv: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tlsleak.cli", *argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_new_inputs(out: Path, proc: subprocess.Popen[str], limit: float = 120) -> None:
    """Until the campaign has executions and its workers have written inputs of their own."""
    end = time.monotonic() + limit
    while time.monotonic() < end and proc.poll() is None:
        stats = out / "stats.jsonl"
        lines = stats.read_text().splitlines() if stats.exists() else []
        if lines and json.loads(lines[-1])["corpus_added"] > 0:
            return
        time.sleep(0.2)
    raise AssertionError("the campaign never got going")


def _modes(folder: Path) -> dict[Path, tuple[bool, int]]:
    """Path -> (is a folder, permission bits) under ``folder``, as the workers go on."""
    modes = {}
    for path in [folder, *folder.rglob("*")]:
        try:
            st = path.lstat()
        except FileNotFoundError:  # handed over (renamed) meanwhile
            continue
        modes[path] = (path.is_dir(), st.st_mode & 0o777)
    return modes


def test_worker_scratch_is_private_and_removed_after_sigint(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _start(["fuzz", "control-fixed", "--out", str(out), "--jobs", "2"], tmp_path)
    _wait_for_new_inputs(out, proc)
    work = out / ".work"
    modes = _modes(work)
    # Copies of the corpus and what libFuzzer wrote itself, all private.
    assert sum(not is_dir for is_dir, _mode in modes.values()) > 0
    wrong = {p: oct(m) for p, (d, m) in modes.items() if m != (0o700 if d else 0o600)}
    assert not wrong
    # libFuzzer prints small crashing inputs into the worker logs.
    logs = list((out / "workers").glob("*.log"))
    assert logs
    assert {oct(log.stat().st_mode & 0o777) for log in logs} == {oct(0o600)}
    assert int((out / ".lock").read_text()) == proc.pid  # whose folder it is
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert not work.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _plant_scratch(out: Path, owner: int) -> Path:
    key = out / ".work" / "w0" / "corpus" / "key"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    (out / ".lock").write_text(f"{owner}\n")
    return key


def test_the_scratch_of_a_dead_campaign_is_swept_at_the_next_start(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _plant_scratch(out, _dead_pid())
    # Even a campaign that then cannot start removes it: it owns the folder.
    with pytest.raises(CampaignError, match="no-such-target"):
        Campaign(CampaignOptions("no-such-target", out, seconds=1)).run()
    assert not (out / ".work").exists()


def test_the_scratch_of_a_live_campaign_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    key = _plant_scratch(out, os.getpid())
    with (out / ".lock").open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(CampaignError, match=f"another campaign \\(pid {os.getpid()}\\)"):
            Campaign(CampaignOptions("control-fixed", out, seconds=1)).run()
    assert key.exists()
    assert (out / ".lock").read_text() == f"{os.getpid()}\n"  # not truncated by the loser


def test_the_documented_maximum_of_jobs_is_the_one_enforced() -> None:
    docs = Path(__file__).parents[2] / "docs" / "fuzzing.md"
    assert f"more than {MAX_JOBS} is refused" in docs.read_text()
