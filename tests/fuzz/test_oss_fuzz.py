"""The OSS-Fuzz kit's fuzzer and the package entry, run the way libFuzzer runners run them.

A ClusterFuzzLite runner unpacks ``<fuzzer>_seed_corpus.zip`` into a corpus
folder and starts the fuzzer with libFuzzer flags: a corpus folder,
``-runs=N`` or a time, ``-artifact_prefix=DIR/``, ``-dict=`` and, to use more
cores, ``-jobs=N`` / ``-fork=N``, for which libFuzzer re-runs ``argv[0]``
through the shell.  The generated fuzzer script is run here with this
environment's Python (the same script PyInstaller bundles in the image), in a
temporary folder, and counted in runs rather than seconds.

Positive control: the kit for ``control-leaky`` crashes with the leak, leaves
a ``crash-*`` file that still leaks, and says ``LeakError`` and ``SSL_CTX``.
Negative control: the kit for ``control-fixed`` runs the same corpus and the
same number of runs clean.  ``-jobs=2`` runs prove the entry's three forms
(the kit's script, ``python -m tlsleak.fuzz.entry``, the ``tlsleak-fuzz``
console script) can be re-run by libFuzzer: before, a script's path was
handed to ``sh``, not executable (exit 126).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from tlsleak import FindingKind, Oracle, decode
from tlsleak.fuzz.entry import relaunch_command
from tlsleak.reports.oss_fuzz import plan, render
from tlsleak.targets import resolve_target

pytest.importorskip("atheris", reason="the fuzzer needs atheris")

# A fixed seed makes a failure reproducible with the same command line; the
# RSS limit keeps a loaded CI machine's slow run from being an "out-of-memory".
LIBFUZZER_FLAGS = ("-seed=1", "-rss_limit_mb=4096")
#: Runs, the seed corpus's included (libFuzzer counts them): past the 444
#: bundled cases, so that hundreds are mutations; seconds on control-fixed.
RUNS = 1000
# Far above what any run here takes, so only a hang trips it.
PROCESS_TIMEOUT = 300


def _kit(tmp_path: Path, target: str) -> tuple[Path, Path, Path]:
    """The kit's fuzzer script and dictionary for ``target``, and its seed corpus unpacked."""
    kit = tmp_path / "kit"
    for name, data in render(plan(target, "proj")).items():
        (kit / name).parent.mkdir(parents=True, exist_ok=True)
        (kit / name).write_bytes(data)
    fuzzer = plan(target, "proj").fuzzer
    corpus = tmp_path / "corpus"
    with zipfile.ZipFile(kit / f".clusterfuzzlite/{fuzzer}_seed_corpus.zip") as archive:
        archive.extractall(corpus)
    return kit / f".clusterfuzzlite/{fuzzer}.py", kit / f".clusterfuzzlite/{fuzzer}.dict", corpus


def _run(
    command: Sequence[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *LIBFUZZER_FLAGS],
        cwd=cwd,
        env=dict(os.environ, **(env or {})),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def _assert_leaks(crash: Path) -> None:
    with Oracle(resolve_target("control-leaky")) as oracle:
        verdict = oracle.check(decode(crash.read_bytes()))
    [leak] = [f for f in verdict.findings if f.kind is FindingKind.LEAK]
    assert leak.delta.get("SSL_CTX", 0) >= 1


# --- the kit's fuzzer -------------------------------------------------------------


def _fuzz_the_kit(
    tmp_path: Path, target: str
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """``python3 <target's kit fuzzer> corpus -runs=1000 -artifact_prefix=artifacts/``.

    Returns the process, the artifacts folder and the corpus.
    """
    script, _, corpus = _kit(tmp_path, target)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    command = [sys.executable, str(script), str(corpus), f"-runs={RUNS}"]
    proc = _run([*command, f"-artifact_prefix={artifacts}/"], tmp_path, {"TLSLEAK_TARGET": target})
    return proc, artifacts, corpus


def test_the_kit_fuzzer_crashes_on_the_planted_leak(tmp_path: Path) -> None:
    proc, artifacts, _corpus = _fuzz_the_kit(tmp_path, "control-leaky")
    out = _output(proc)
    assert proc.returncode != 0, out
    assert "LeakError" in proc.stderr
    assert "SSL_CTX" in proc.stderr
    [crash] = artifacts.glob("crash-*")
    _assert_leaks(crash)
    assert not list(tmp_path.glob("crash-*"))  # under -artifact_prefix only


def test_the_kit_fuzzer_runs_clean_on_the_fixed_control(tmp_path: Path) -> None:
    proc, artifacts, corpus = _fuzz_the_kit(tmp_path, "control-fixed")
    out = _output(proc)
    assert proc.returncode == 0, out
    assert len(list(corpus.iterdir())) < RUNS // 2  # so most runs were mutations
    assert f"Done {RUNS} runs" in out
    assert "LeakError" not in out
    assert not list(artifacts.iterdir())
    assert not list(tmp_path.glob("crash-*"))


def test_the_kit_fuzzer_fuzzes_its_own_target_whatever_the_environment_says(
    tmp_path: Path,
) -> None:
    # Under OSS-Fuzz the fuzzer's name is what it fuzzes; the environment there is not ours.
    script, _, corpus = _kit(tmp_path, "control-leaky")
    proc = _run(
        [sys.executable, str(script), str(corpus), f"-runs={RUNS}"],
        tmp_path,
        {"TLSLEAK_TARGET": "control-fixed"},
    )
    assert proc.returncode != 0, _output(proc)
    assert "leak in control-leaky" in proc.stderr


def test_the_kit_dictionary_is_one_libfuzzer_accepts(tmp_path: Path) -> None:
    script, dictionary, corpus = _kit(tmp_path, "control-fixed")
    # python3 tlsleak_control_fixed_fuzzer.py corpus -dict=tlsleak_control_fixed_fuzzer.dict -runs=1
    proc = _run(
        [sys.executable, str(script), str(corpus), f"-dict={dictionary}", "-runs=1"], tmp_path
    )
    out = _output(proc)
    assert proc.returncode == 0, out
    entries = sum(
        1 for line in dictionary.read_text().splitlines() if line and not line.startswith("#")
    )
    assert f"Dictionary: {entries} entries" in out
    # The same run refuses a dictionary that is not one: the check above can fail.
    bad = tmp_path / "bad.dict"
    bad.write_text('begin="-----BEGIN \n')
    refused = _run([sys.executable, str(script), str(corpus), f"-dict={bad}", "-runs=1"], tmp_path)
    assert refused.returncode != 0, _output(refused)
    assert "ParseDictionaryFile" in _output(refused)


# --- OSS-Fuzz's bad build checks (infra/base-images/base-runner/bad_build_check) --


def _bad_build_checks(tmp_path: Path, target: str) -> tuple[str, str]:
    """The outputs of the startup check and the seed corpus check; AssertionError if failed."""
    script, _, corpus = _kit(tmp_path, target)
    empty = tmp_path / "empty"
    empty.mkdir()
    # check_startup_crash: no seed corpus, "-seed=1337 -runs=4", must say "Done 4 runs".
    startup = _run([sys.executable, str(script), str(empty), "-seed=1337", "-runs=4"], tmp_path)
    assert "Done 4 runs" in _output(startup), _output(startup)
    # check_seed_corpus: the seed corpus with "-runs=0" must exit 0.
    seeds = _run([sys.executable, str(script), str(corpus), "-runs=0", "-timeout=25"], tmp_path)
    assert seeds.returncode == 0, _output(seeds)
    return _output(startup), _output(seeds)


def test_the_fixed_controls_kit_passes_the_bad_build_checks(tmp_path: Path) -> None:
    _bad_build_checks(tmp_path, "control-fixed")


def test_a_target_that_leaks_already_fails_the_bad_build_checks_with_the_leak(
    tmp_path: Path,
) -> None:
    # docs/oss-fuzz.md: a project that leaks on the bundled seeds fails the
    # build step, and the log it prints holds the finding.
    with pytest.raises(AssertionError) as failed:
        _bad_build_checks(tmp_path, "control-leaky")
    assert "LeakError: leak in control-leaky" in str(failed.value)


# --- -jobs and -fork: libFuzzer re-runs argv[0] -----------------------------------


def _console_script() -> Path:
    script = Path(sys.executable).parent / "tlsleak-fuzz"
    if not script.is_file():
        pytest.skip(f"{script} not installed (reinstall tlsleak: pip install -e .)")
    return script


def _entry_forms(tmp_path: Path, target: str) -> dict[str, tuple[list[str], Path]]:
    script, _, corpus = _kit(tmp_path, target)
    return {
        "kit script": ([sys.executable, str(script)], corpus),
        "python -m": ([sys.executable, "-m", "tlsleak.fuzz.entry"], corpus),
        "console script": ([str(_console_script())], corpus),
    }


@pytest.mark.parametrize("form", ["kit script", "python -m", "console script"])
def test_jobs_re_run_the_same_entry_with_the_same_interpreter(tmp_path: Path, form: str) -> None:
    command, corpus = _entry_forms(tmp_path, "control-fixed")[form]
    # e.g. tlsleak-fuzz corpus -runs=1000 -jobs=2  (TLSLEAK_TARGET=control-fixed)
    proc = _run(
        [*command, str(corpus), f"-runs={RUNS}", "-jobs=2"],
        tmp_path,
        {"TLSLEAK_TARGET": "control-fixed"},
    )
    out = _output(proc)
    assert proc.returncode == 0, out
    assert "exit code 126" not in out
    for job in (0, 1):
        log = (tmp_path / f"fuzz-{job}.log").read_text()
        assert f"Done {RUNS} runs" in log, log
        # The interpreter this test runs, not whichever python3 comes first on PATH.
        assert f"Job {job} exited with exit code 0" in out
    assert f"{sys.executable} " in out or str(_console_script()) in out


def test_jobs_report_the_planted_leak(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    # tlsleak-fuzz corpus -runs=1000 -jobs=2 -artifact_prefix=artifacts/  (control-leaky)
    corpus = _kit(tmp_path, "control-leaky")[2]
    flags = [f"-runs={RUNS}", "-jobs=2", f"-artifact_prefix={artifacts}/"]
    proc = _run(
        [str(_console_script()), str(corpus), *flags],
        tmp_path,
        {"TLSLEAK_TARGET": "control-leaky"},
    )
    assert proc.returncode != 0, _output(proc)
    logs = "".join((tmp_path / f"fuzz-{job}.log").read_text() for job in (0, 1))
    assert "LeakError" in logs
    assert "SSL_CTX" in logs
    crashes = list(artifacts.glob("crash-*"))
    assert crashes
    _assert_leaks(crashes[0])


def test_fork_mode_reports_the_planted_leak(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    script, _, _ = _kit(tmp_path, "control-leaky")
    # No seeds: fork mode first merges them, one process per seed that crashes,
    # and nearly every bundled case leaks on the leaky control (minutes here).
    corpus = tmp_path / "empty"
    corpus.mkdir()
    # python3 tlsleak_control_leaky_fuzzer.py empty -fork=2 -artifact_prefix=artifacts/
    proc = _run(
        [sys.executable, str(script), str(corpus), "-fork=2", f"-artifact_prefix={artifacts}/"],
        tmp_path,
    )
    assert proc.returncode != 0, _output(proc)
    assert "crash" in proc.stderr
    crashes = list(artifacts.glob("crash-*"))
    assert crashes
    _assert_leaks(crashes[0])


# --- the entry --------------------------------------------------------------------


def test_the_structure_aware_mutator_is_on_unless_turned_off(tmp_path: Path) -> None:
    command, corpus = _entry_forms(tmp_path, "control-fixed")["python -m"]
    env = {"TLSLEAK_TARGET": "control-fixed"}
    on = _run([*command, str(corpus), "-runs=20"], tmp_path, env)
    assert on.returncode == 0, _output(on)
    assert "LLVMFuzzerCustomMutator" in on.stderr
    off = _run([*command, str(corpus), "-runs=20"], tmp_path, {**env, "TLSLEAK_MUTATOR": "bytes"})
    assert off.returncode == 0, _output(off)
    assert "LLVMFuzzerCustomMutator" not in off.stderr


def test_an_unknown_target_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = _run(
        [sys.executable, "-m", "tlsleak.fuzz.entry", "-runs=1"],
        tmp_path,
        {"TLSLEAK_TARGET": "no-such-target"},
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("tlsleak-fuzz: unknown target 'no-such-target'")
    assert proc.stderr.count("\n") == 1


def test_a_target_seen_by_the_heap_ledgers_only_needs_a_preload(tmp_path: Path) -> None:
    # Why kits refuse ssl, mbedtls, grpc and mongoose: the entry cannot count them.
    proc = _run(
        [sys.executable, "-m", "tlsleak.fuzz.entry", "-runs=1"], tmp_path, {"TLSLEAK_TARGET": "ssl"}
    )
    assert proc.returncode == 2, _output(proc)
    assert proc.stderr.startswith("tlsleak-fuzz: the OpenSSL heap ledger is not active")
    assert proc.stderr.count("\n") == 1


def test_relaunch_command_re_runs_this_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    python = sys.executable
    assert relaunch_command("/x/entry.py", "tlsleak.fuzz.entry") == (
        f"{python} -m tlsleak.fuzz.entry"
        if " " not in python
        else f"'{python}' -m tlsleak.fuzz.entry"
    )
    assert relaunch_command("rel/my fuzzer.py").endswith(
        f" '{os.path.abspath('rel/my fuzzer.py')}'"
    )
    assert relaunch_command("/venv/bin/tlsleak-fuzz").split()[0].strip("'") == python
    # A PyInstaller executable (OSS-Fuzz's build) is its own interpreter.
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert relaunch_command("/out/x_fuzzer.pkg", None) == "/out/x_fuzzer.pkg"
