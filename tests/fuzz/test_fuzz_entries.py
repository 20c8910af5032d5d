"""The atheris entry points, run as a user runs them, proven on both control targets.

Each test starts the entry as its own process (libFuzzer owns the process and
ends it with its own exit code, so there is no calling it in-process) in a
temporary folder, so corpus growth and crash files land there and nowhere
else.  Positive control: on ``control-leaky`` the entry must fail, name the
leak and leave a crash file that still leaks.  Negative control: on
``control-fixed`` the same seed and a few hundred mutations must run clean.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tlsleak import FindingKind, InitCase, Oracle, decode, encode
from tlsleak.cases.files import content_name
from tlsleak.targets import resolve_target

pytest.importorskip("atheris", reason="the fuzz entries need atheris")

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
FUZZ_ORACLE = FUZZ_DIR / "fuzz_oracle.py"
FUZZ_PROPERTY = FUZZ_DIR / "fuzz_property.py"

#: A certificate blob OpenSSL's parser rejects, with a key blob: the leaky
#: control fails at the certificate step and loses its SSL_CTX and SSL.
LEAKY_SEED = InitCase(
    cert=b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", key=b"junk"
)

# libFuzzer's default RSS limit (2 GiB) is about native targets; a Python
# process with OpenSSL and Hypothesis loaded is nowhere near it, but a loaded CI
# machine should not turn a slow run into an "out-of-memory" failure.  A fixed
# seed makes a failure reproducible with the same command line.
LIBFUZZER_FLAGS = ("-seed=1", "-rss_limit_mb=4096")

# Far above what any run here takes (a few seconds), so only a hang trips it.
PROCESS_TIMEOUT = 60


def _run(script: Path, target: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TLSLEAK_TARGET=target)
    return subprocess.run(
        [sys.executable, str(script), *args, *LIBFUZZER_FLAGS],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    # libFuzzer and atheris report on stderr, Python's own output may go to
    # stdout; what matters is what the user sees in the terminal.
    return proc.stdout + proc.stderr


def _seed_corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    data = encode(LEAKY_SEED)
    (corpus / content_name(data)).write_bytes(data)
    return corpus


def _crashes(folder: Path) -> list[Path]:
    return sorted(folder.glob("crash-*"))


@pytest.fixture
def _strategies() -> None:
    pytest.importorskip(
        "tlsleak.strategies", reason="fuzz_property.py draws from tlsleak.strategies"
    )


# --- fuzz_oracle.py ------------------------------------------------------------


def test_oracle_entry_finds_the_planted_leak(tmp_path: Path) -> None:
    corpus = _seed_corpus(tmp_path)
    proc = _run(FUZZ_ORACLE, "control-leaky", tmp_path, str(corpus), "-runs=50")
    out = _output(proc)
    assert proc.returncode != 0, out
    assert "LeakError" in out
    assert "SSL_CTX" in out
    [crash] = _crashes(tmp_path)
    data = crash.read_bytes()
    # libFuzzer names artifacts by content, as tlsleak names corpus files.
    assert crash.name == f"crash-{content_name(data)}"
    with Oracle(resolve_target("control-leaky")) as oracle:
        verdict = oracle.check(decode(data))
    kinds = {f.kind for f in verdict.findings}
    assert FindingKind.LEAK in kinds
    [leak] = [f for f in verdict.findings if f.kind is FindingKind.LEAK]
    assert leak.delta.get("SSL_CTX", 0) >= 1


def test_oracle_entry_replays_a_leaking_input(tmp_path: Path) -> None:
    # Replaying is passing the file instead of a folder: libFuzzer runs it once.
    corpus = _seed_corpus(tmp_path)
    [seed] = corpus.iterdir()
    proc = _run(FUZZ_ORACLE, "control-leaky", tmp_path, str(seed))
    out = _output(proc)
    assert proc.returncode != 0, out
    assert "LeakError" in out
    assert "SSL_CTX +1" in out


def test_oracle_entry_runs_clean_on_the_fixed_control(tmp_path: Path) -> None:
    corpus = _seed_corpus(tmp_path)
    proc = _run(FUZZ_ORACLE, "control-fixed", tmp_path, str(corpus), "-runs=300")
    out = _output(proc)
    assert proc.returncode == 0, out
    assert "Done 300 runs" in out
    assert "LeakError" not in out
    assert not _crashes(tmp_path)


def test_oracle_entry_refuses_an_unknown_target(tmp_path: Path) -> None:
    proc = _run(FUZZ_ORACLE, "no-such-target", tmp_path, "-runs=1")
    out = _output(proc)
    assert proc.returncode != 0
    assert "unknown target 'no-such-target'" in out
    assert not _crashes(tmp_path)


# --- fuzz_property.py ----------------------------------------------------------


@pytest.mark.usefixtures("_strategies")
def test_property_entry_finds_the_planted_leak(tmp_path: Path) -> None:
    # No seed: libFuzzer's bytes drive the strategy, and most of what
    # init_cases() draws is malformed, which the leaky control leaks on.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    proc = _run(FUZZ_PROPERTY, "control-leaky", tmp_path, str(corpus), "-runs=2000")
    out = _output(proc)
    assert proc.returncode != 0, out
    assert "LeakError" in out
    assert "SSL_CTX" in out
    [crash] = _crashes(tmp_path)
    # The crash file holds Hypothesis's choices, not an encoded case: the proof
    # that it still leaks is that the same entry fails on it again.
    replay = _run(FUZZ_PROPERTY, "control-leaky", tmp_path, str(crash))
    assert replay.returncode != 0, _output(replay)
    assert "LeakError" in _output(replay)


@pytest.mark.usefixtures("_strategies")
def test_property_entry_runs_clean_on_the_fixed_control(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    proc = _run(FUZZ_PROPERTY, "control-fixed", tmp_path, str(corpus), "-runs=300")
    out = _output(proc)
    assert proc.returncode == 0, out
    assert "Done 300 runs" in out
    assert "LeakError" not in out
    assert not _crashes(tmp_path)
