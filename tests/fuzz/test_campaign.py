"""Fuzz campaigns end to end: findings, the corpus, crashes, hangs, stopping, bad input.

Each campaign here runs real atheris workers for a few seconds; what is
asserted is what they found and what they left on disk, never how fast.
"""

from __future__ import annotations

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
from tlsleak.cases.files import bundled_corpus, content_name, write_case
from tlsleak.check.findings import load_finding
from tlsleak.cli import main
from tlsleak.fuzz.campaign import Campaign, CampaignError, CampaignOptions, check_libfuzzer_flags


def _whole_files_only(corpus: Path) -> list[Path]:
    """Every visible file of ``corpus`` is whole: its content hashes to its name."""
    files = [p for p in corpus.iterdir() if not p.name.startswith(".")]
    for path in files:
        assert content_name(path.read_bytes()) == path.name, path
        assert path.stat().st_mode & 0o077 == 0, f"{path} is not private"
    return files


def _complete_findings(findings: Path) -> list[Path]:
    folders = [p for p in findings.iterdir() if not p.name.startswith(".")]
    for folder in folders:
        names = {p.name for p in folder.iterdir()}
        assert {"reproducer", "original", "finding.json", "summary.txt"} <= names, folder
        json.loads((folder / "finding.json").read_text())
    return folders


def _run(options: CampaignOptions) -> tuple[Campaign, object, list[str]]:
    messages: list[str] = []
    campaign = Campaign(options, on_message=messages.append)
    return campaign, campaign.run(), messages


# --- findings: the planted leak and its fix -----------------------------------------------


def test_campaign_on_the_leaky_control_stores_one_minimised_leak_that_replays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    options = CampaignOptions("control-leaky", out, seconds=8, minimize_budget=60)
    campaign, status, _messages = _run(options)
    kinds = [f.kind for f in status.findings]  # type: ignore[attr-defined]
    # Every step that fails after the context is made leaks the same way:
    # one bug, one finding, however many inputs hit it.
    assert kinds == ["leak"]
    record = status.findings[0]  # type: ignore[attr-defined]
    assert record.count > 1
    # ...seen behind several failing steps (the bundled corpus fails at all).
    assert len(record.steps) > 1
    assert sum(record.steps.values()) == record.count
    folders = _complete_findings(out / "findings")
    assert [f.name.rsplit("-", 1)[0] for f in folders] == ["leak-SSL+SSL_CTX"]
    finding, reproducer = load_finding(folders[0])
    # The workers' process heap (preloaded) also counts the blocks they hold.
    assert {k: v for k, v in finding.delta.items() if k in ("SSL_CTX", "SSL")} == {
        "SSL_CTX": 1,
        "SSL": 1,
    }
    assert reproducer.size <= decode_size(folders[0] / "original")
    stored = json.loads((folders[0] / "finding.json").read_text())
    assert stored["count"] == record.count  # repeats were flushed to disk
    assert main(["replay", str(folders[0]), "--replays", "1"]) == 1
    assert "still there" in capsys.readouterr().out
    # The working corpus is a copy of the bundled one, whole files only; the
    # workers' scratch is gone; the stats are one JSON object a line.
    corpus = _whole_files_only(out / "corpus")
    assert len(corpus) >= len(list(bundled_corpus().iterdir())) - 1
    assert not (out / ".work").exists()
    lines = (out / "stats.jsonl").read_text().splitlines()
    assert lines
    last = json.loads(lines[-1])
    assert last["findings"] == {"leak": 1}
    assert last["execs"] > 0
    assert campaign.features  # the guidance saw OpenSSL errors


def decode_size(path: Path) -> int:
    from tlsleak.cases.files import load_case

    return load_case(path).size


def test_campaign_on_the_fixed_control_finds_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _campaign, status, _messages = _run(CampaignOptions("control-fixed", out, seconds=5))
    assert status.findings == []  # type: ignore[attr-defined]
    assert status.execs > 0  # type: ignore[attr-defined]
    assert _complete_findings(out / "findings") == []


def test_the_bundled_corpus_is_never_written(tmp_path: Path) -> None:
    bundled = bundled_corpus()
    before = sorted(p.name for p in bundled.iterdir())
    _run(CampaignOptions("control-fixed", tmp_path / "out", seconds=3))
    assert sorted(p.name for p in bundled.iterdir()) == before


# --- crashes and hangs do not end a campaign ------------------------------------------------


@pytest.fixture
def user_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of targets that crash or hang on any case with a certificate."""
    (tmp_path / "bad_targets.py").write_text(
        textwrap.dedent(
            """
            import os, time

            def crash(case):
                if case.cert:
                    os.abort()

            def hang(case):
                if case.cert:
                    time.sleep(60)
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return "bad_targets"


def _seeded_corpus(folder: Path) -> Path:
    write_case(folder, InitCase())  # runs clean
    write_case(folder, InitCase(cert=b"boom"))  # kills the worker
    return folder


def test_a_crashing_input_is_a_finding_and_the_worker_is_restarted(
    tmp_path: Path, user_targets: str
) -> None:
    corpus = _seeded_corpus(tmp_path / "corpus")
    options = CampaignOptions(
        f"{user_targets}:crash", tmp_path / "out", corpus=corpus, seconds=10, minimize_budget=10
    )
    _campaign, status, _messages = _run(options)
    kinds = {f.kind for f in status.findings}  # type: ignore[attr-defined]
    assert kinds == {"crash"}
    assert status.workers[0].restarts >= 1  # type: ignore[attr-defined]
    folders = _complete_findings(tmp_path / "out" / "findings")
    assert len(folders) == 1
    finding, _case = load_finding(folders[0])
    assert "SIGABRT" in finding.outcome.message
    # The crasher was kept out of later workers, never out of the corpus.
    assert len(_whole_files_only(corpus)) >= 2


def test_a_hanging_input_is_a_timeout_finding(tmp_path: Path, user_targets: str) -> None:
    corpus = _seeded_corpus(tmp_path / "corpus")
    options = CampaignOptions(
        f"{user_targets}:hang", tmp_path / "out", corpus=corpus, seconds=10, timeout=1
    )
    _campaign, status, _messages = _run(options)
    assert {f.kind for f in status.findings} == {"timeout"}  # type: ignore[attr-defined]
    assert len(_complete_findings(tmp_path / "out" / "findings")) == 1


# --- bad input: one line, exit 2 --------------------------------------------------------------


def test_fuzz_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out")
    (tmp_path / "file").write_text("not a folder")
    cases = [
        (["fuzz", "no-such-target", "--out", out, "--time", "1"], "no-such-target"),
        (["fuzz", "control-fixed", "--out", out, "--corpus", str(tmp_path / "nope")], "nope"),
        (["fuzz", "control-fixed", "--out", str(tmp_path / "file" / "x")], "cannot write"),
        (["fuzz", "control-fixed", "--out", out, "--", "-seed=3"], "--seed"),
        (["fuzz", "control-fixed", "--out", out, "--", "-artifact_prefix=x/"], "--out"),
        (["fuzz", "control-fixed", "--out", out, "--", "max_len"], "-name=value"),
        (["fuzz", "control-fixed", "--jobs", "0"], "at least 1"),
        (["fuzz", "control-fixed", "--time", "-3"], "more than 0"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert words in err, (argv, err)


def test_one_out_folder_takes_one_campaign_at_a_time(tmp_path: Path) -> None:
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with (out / ".lock").open("wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(CampaignError, match="another campaign"):
            Campaign(CampaignOptions("control-fixed", out, seconds=1)).run()


def test_libfuzzer_flags_are_checked() -> None:
    assert check_libfuzzer_flags(["-max_len=100", "-only_ascii=1"]) == [
        "-max_len=100",
        "-only_ascii=1",
    ]
    for bad in (["-jobs=2"], ["-timeout=3"], ["--max_len=3"], ["-dict"]):
        with pytest.raises(CampaignError):
            check_libfuzzer_flags(bad)


def test_a_huge_file_in_the_corpus_is_skipped_with_a_message(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_case(corpus, InitCase())
    (corpus / "huge").write_bytes(b"\0" * (9 * 1024 * 1024))
    options = CampaignOptions("control-fixed", tmp_path / "out", corpus=corpus, seconds=3)
    _campaign, status, messages = _run(options)
    assert any("huge" in m and "larger than" in m for m in messages), messages
    assert status.execs > 0  # type: ignore[attr-defined]
    assert (corpus / "huge").stat().st_size == 9 * 1024 * 1024  # the user's file is left alone


# --- stopping: SIGTERM cleanly, SIGKILL without partial files --------------------------------


def _start(argv: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tlsleak.cli", *argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_execs(out: Path, proc: subprocess.Popen[str], limit: float = 60) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end and proc.poll() is None:
        stats = out / "stats.jsonl"
        if stats.exists():
            lines = stats.read_text().splitlines()
            if lines and json.loads(lines[-1])["execs"] > 0:
                return
        time.sleep(0.2)
    raise AssertionError("the campaign never got going")


def _workers_of(out: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"tlsleak.fuzz.worker" in cmdline and str(out).encode() in cmdline:
                pids.append(int(entry.name))
    return pids


def test_sigterm_stops_workers_and_prints_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _start(["fuzz", "control-leaky", "--out", str(out), "--jobs", "2"], tmp_path)
    _wait_for_execs(out, proc)
    proc.send_signal(signal.SIGTERM)
    stdout, _stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "distinct findings" in stdout
    assert not _workers_of(out)
    assert not (out / ".work").exists()
    _whole_files_only(out / "corpus")
    assert len(_complete_findings(out / "findings")) == 1
    assert json.loads((out / "stats.jsonl").read_text().splitlines()[-1])["findings"]


def test_sigkill_leaves_whole_files_and_no_workers(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _start(["fuzz", "control-leaky", "--out", str(out), "--jobs", "2"], tmp_path)
    _wait_for_execs(out, proc)
    time.sleep(1)
    proc.kill()
    proc.communicate(timeout=30)
    # The workers notice on their next report (twice a second) and leave.
    end = time.monotonic() + 15
    while _workers_of(out) and time.monotonic() < end:
        time.sleep(0.2)
    assert not _workers_of(out)
    _whole_files_only(out / "corpus")
    _complete_findings(out / "findings")
    # The next campaign on the same folder clears the dead one's scratch.
    _run(CampaignOptions("control-fixed", out, seconds=2))
    assert not (out / ".work").exists()


def test_workers_are_started_with_the_heap_shim_when_it_is_built(tmp_path: Path) -> None:
    from tlsleak.check.worker import child_env

    env = child_env()
    try:
        from tlsleak.ledgers.shim import shim_path

        shim = str(shim_path())
    except Exception:
        pytest.skip("the heap shim is not built here")
    assert shim in env.get("LD_PRELOAD", "")
    assert os.environ.get("LD_PRELOAD", "") != env["LD_PRELOAD"]


# --- corpus grow --fuzz ------------------------------------------------------------------------


def test_corpus_grow_by_fuzzing_adds_inputs_and_reports_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "grown"
    argv = ["corpus", "grow", str(folder), "--fuzz", "control-leaky", "--time", "5"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 1  # the planted leak
    out = capsys.readouterr().out
    assert "new inputs from" in out
    assert "leak" in out
    assert len(_whole_files_only(folder)) > 0
    assert len(_complete_findings(tmp_path / "out" / "findings")) == 1
    # On the fixed control the same growth is clean, and nothing is kept.
    assert main(["corpus", "grow", str(folder), "--fuzz", "control-fixed", "--time", "3"]) == 0
    assert main(["corpus", "grow", str(folder), "--fuzz", "x", "--defect", "empty-cert"]) == 2


def test_a_full_disk_is_reported_once_and_the_campaign_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tlsleak.cases.files import CorpusError
    from tlsleak.fuzz import shared_corpus as shared_corpus_module

    corpus = tmp_path / "corpus"
    write_case(corpus, InitCase())
    before = sorted(p.name for p in corpus.iterdir())

    def full(folder: Path, data: bytes) -> tuple[Path, bool]:
        raise CorpusError(f"{folder}: cannot write: No space left on device")

    monkeypatch.setattr(shared_corpus_module, "write_input", full)
    options = CampaignOptions("control-leaky", tmp_path / "out", corpus=corpus, seconds=6)
    _campaign, status, messages = _run(options)
    assert [m for m in messages if "No space left" in m] == [
        f"corpus: {corpus}: cannot write: No space left on device"
    ]
    assert status.execs > 0  # type: ignore[attr-defined]
    assert [f.kind for f in status.findings] == ["leak"]  # type: ignore[attr-defined]
    assert sorted(p.name for p in corpus.iterdir()) == before  # nothing half-written


def test_a_campaign_that_cannot_start_releases_its_folder(tmp_path: Path) -> None:
    import fcntl

    out = tmp_path / "out"
    with pytest.raises(CampaignError, match="no-such-target"):
        Campaign(CampaignOptions("no-such-target", out, seconds=1)).run()
    with (out / ".lock").open("wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise if still held


def test_a_c_library_that_segfaults_is_a_crash_finding(
    tmp_path: Path, c_controls: dict[str, Path]
) -> None:
    # The C control dereferences NULL on a certificate starting "CRASH": the
    # worker dies on SIGSEGV in C, the campaign stores the crash and goes on.
    corpus = tmp_path / "corpus"
    write_case(corpus, InitCase())
    write_case(corpus, InitCase(cert=b"CRASH"))
    target = f"c:{c_controls['crash']}"
    options = CampaignOptions(target, tmp_path / "out", corpus=corpus, seconds=8)
    _campaign, status, _messages = _run(options)
    crashes = [f for f in status.findings if f.kind == "crash"]  # type: ignore[attr-defined]
    assert len(crashes) == 1
    assert "SIGSEGV" in crashes[0].summary
    assert status.workers[0].restarts >= 1  # type: ignore[attr-defined]
    assert status.execs > 0  # type: ignore[attr-defined]


def test_a_leaking_c_library_gives_one_leak_with_its_allocation_sites(
    tmp_path: Path, c_controls: dict[str, Path]
) -> None:
    # Positive control through the preloaded heap shim: the C leaky control
    # leaks on every rejected case; the fixed one (negative control) never.
    corpus = tmp_path / "corpus"
    write_case(corpus, InitCase(cert=b"not a certificate"))
    for name, expected in (("leaky", ["leak"]), ("fixed", [])):
        out = tmp_path / name
        options = CampaignOptions(f"c:{c_controls[name]}", out, corpus=corpus, seconds=6)
        _campaign, status, _messages = _run(options)
        assert [f.kind for f in status.findings] == expected, name  # type: ignore[attr-defined]
    [folder] = _complete_findings(tmp_path / "leaky" / "findings")
    finding, _case = load_finding(folder)
    assert finding.sites  # where OpenSSL allocated what leaked
    assert all(value > 0 for value in finding.delta.values())
    assert any(site.file.endswith(".c") for site in finding.sites)
