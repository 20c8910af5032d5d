"""The ``heap`` ledger in tlsleak's workers: planted leaks on any stack, clean code, failures.

Run through the check worker (IsolatedOracle, ``tlsleak check``), whose
process has the malloc interposer preloaded.  Positive controls: an SSL_CTX
leaked through cryptography's own OpenSSL (which no OpenSSL heap shim sees),
a C library on the system OpenSSL, and a C library with no OpenSSL at all
that loses plain malloc blocks.  Negative controls: ``pyopenssl`` and
``control-fixed`` over the bundled corpus, the fixed C library, and a
``realloc`` that grows once.  Allocation failures are injected process-wide:
``--fail-alloc`` works on pyOpenSSL's OpenSSL and leaves the worker usable.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import write_case
from tlsleak.check.oracle import FindingKind, Oracle
from tlsleak.check.worker import IsolatedOracle
from tlsleak.cli import main
from tlsleak.ledgers.shim import preload_env
from tlsleak.targets import TARGETS, CallableTarget
from tlsleak.targets.probe import survey

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the interposer is built for Linux (LD_PRELOAD)"
)

C_SOURCE = Path(__file__).parents[1] / "c" / "control_malloc.c"

#: A user's init path on pyOpenSSL that keeps the context of every refused
#: case: a planted SSL_CTX leak in cryptography's OpenSSL.
PLANTED = """
from OpenSSL import SSL, crypto
from tlsleak import Rejected

kept = []

def init(case):
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    try:
        ctx.use_certificate(crypto.load_certificate(crypto.FILETYPE_PEM, case.cert))
    except crypto.Error:
        kept.append(ctx)  # the bug: a registry that is never cleared
        raise Rejected("certificate", "cannot parse certificate") from None
"""


@pytest.fixture(scope="module")
def malloc_controls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tests/c/control_malloc.c, leaky and fixed, built without any OpenSSL."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    folder = tmp_path_factory.mktemp("malloc-controls")
    built = {}
    for name, flags in (("leaky", []), ("fixed", ["-DCONTROL_FIXED"])):
        out = folder / f"malloc-{name}.so"
        cmd = [gcc, "-shared", "-fPIC", "-Wall", "-Wextra", "-O1", *flags, "-o", str(out)]
        subprocess.run([*cmd, str(C_SOURCE)], check=True, capture_output=True)
        built[name] = out
    return built


def _kinds(oracle: IsolatedOracle, cases: list[InitCase]) -> list[list[FindingKind]]:
    return [[f.kind for f in oracle.check(case).findings] for case in cases]


# -- positive controls ----------------------------------------------------------------


def test_an_ssl_ctx_kept_by_a_pyopenssl_user_is_found(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    valid_case: InitCase,
    bad_cert_case: InitCase,
) -> None:
    (tmp_path / "planted_tls.py").write_text(PLANTED)
    monkeypatch.chdir(tmp_path)  # the worker imports the target from where it stands
    with IsolatedOracle("planted_tls:init", ledgers=["heap"]) as oracle:
        assert oracle.ledger_names == ["heap"]
        leaked = oracle.check(bad_cert_case)
        clean = oracle.check(valid_case)
    assert [f.kind for f in leaked.findings] == [FindingKind.LEAK]
    assert leaked.findings[0].delta["heap.blocks"] > 10  # an SSL_CTX is dozens of blocks
    assert clean.clean


def test_control_leaky_is_found_on_the_wheels_openssl(
    valid_case: InitCase, bad_cert_case: InitCase, bad_key_case: InitCase
) -> None:
    with IsolatedOracle("control-leaky", ledgers=["heap"]) as oracle:
        found = _kinds(oracle, [bad_cert_case, bad_key_case, valid_case])
    assert found == [[FindingKind.LEAK], [FindingKind.LEAK], []]


def test_a_c_library_on_the_system_openssl_is_found_by_heap_alone(
    c_controls: dict[str, Path], valid_case: InitCase, bad_cert_case: InitCase
) -> None:
    with IsolatedOracle(f"c:{c_controls['leaky']}", ledgers=["heap"]) as oracle:
        assert _kinds(oracle, [bad_cert_case, valid_case]) == [[FindingKind.LEAK], []]
    with IsolatedOracle(f"c:{c_controls['fixed']}", ledgers=["heap"]) as oracle:
        assert _kinds(oracle, [bad_cert_case, valid_case]) == [[], []]


def test_a_c_library_without_openssl_leaking_plain_malloc_is_found(
    malloc_controls: dict[str, Path], valid_case: InitCase, bad_key_case: InitCase
) -> None:
    with IsolatedOracle(f"c:{malloc_controls['leaky']}") as oracle:
        # The default ledgers: the OpenSSL heap cannot see it, the process heap can.
        assert oracle.ledger_names == ["heap", "fds"]
        assert "reaches no OpenSSL" in oracle.blind["openssl-heap"]
        leaked = oracle.check(bad_key_case)  # a truncated PEM key: no END line
        clean = oracle.check(valid_case)
    assert str(leaked.outcome.step) == "key"
    assert [f.kind for f in leaked.findings] == [FindingKind.LEAK]
    # The copies of the three blobs: three blocks, every attempt.
    assert leaked.findings[0].delta["heap.blocks"] == 3
    assert clean.clean


# -- negative controls ----------------------------------------------------------------


@pytest.mark.parametrize("target", ["pyopenssl", "control-fixed"])
def test_clean_targets_stay_clean_on_the_bundled_corpus(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", target, "--ledger", "heap", "-q"]) == 0
    assert "no findings" in capsys.readouterr().out


def test_the_fixed_malloc_library_is_clean(
    malloc_controls: dict[str, Path], small_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", f"c:{malloc_controls['fixed']}", str(small_corpus), "-q"]) == 0
    assert "no findings" in capsys.readouterr().out


#: In a preloaded child: a target that grows one realloc'd buffer by 32 bytes
#: once (or, as a positive control, makes a new block on every attempt),
#: under the oracle, counting its own runs (replays show as extra runs).  Two
#: checks first: a fresh process's first attempts fill caches (and replay).
REALLOC_CHILD = """
import ctypes, json, sys
from tlsleak import InitCase
from tlsleak.check.oracle import Oracle
from tlsleak.ledgers.interposer import interposer
from tlsleak.targets import CallableTarget
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.realloc.restype, libc.realloc.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t]
buffer = libc.malloc(4000)
size, runs, kept, moved, due = 4000, [], [], [], []
def grow_once(case):
    global buffer, size
    runs.append(1)
    if due:  # a buffer found too small, once
        due.clear()
        before = interposer().counts()
        size += 32
        buffer = libc.realloc(buffer, size)
        after = interposer().counts()
        moved.extend([after[0] - before[0], after[1] - before[1]])
def leak(case):
    runs.append(1)
    kept.append(libc.malloc(1000))
fn = grow_once if sys.argv[1] == "grow" else leak
with Oracle(CallableTarget(fn), ledgers=["heap"]) as oracle:
    for _ in range(2):
        oracle.check(InitCase())
    runs.clear()
    kinds = []
    for i in range(6):
        due.extend([1] if i == 2 else [])
        kinds.append([str(f.kind) for f in oracle.check(InitCase()).findings])
print(json.dumps({"kinds": kinds, "runs": len(runs), "moved": moved}))
"""


@pytest.mark.parametrize(("mode", "runs"), [("grow", 6), ("leak", None)])
def test_a_realloc_that_grows_once_starts_no_replay(mode: str, runs: int | None) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(REALLOC_CHILD), mode],
        env=preload_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    if mode == "grow":
        assert got["moved"] == [0, 32]  # no new block, 32 more bytes: heap.bytes grew
        assert got["kinds"] == [[]] * 6
        assert got["runs"] == runs  # six checks, not one replay
    else:
        assert got["kinds"][-1] == ["leak"]  # a new block every attempt is a leak


# -- allocation failures, process-wide ---------------------------------------------


def test_fail_alloc_on_pyopenssl_through_heap(
    tmp_path: Path, valid_case: InitCase, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every allocation of one accepted case made to fail in turn: OpenSSL
    # inside cryptography's wheel fails, Python's own allocations fail
    # (MemoryError: a rejection), and the failure paths are judged.
    write_case(tmp_path / "one", valid_case)
    report = tmp_path / "report.json"
    args = ["check", "pyopenssl", str(tmp_path / "one"), "--ledger", "heap", "--fail-alloc"]
    code = main([*args, "--fail-budget", "5000", "--json", str(report), "-q"])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    assert "error" not in captured.err.lower()
    data = json.loads(report.read_text())
    assert data["ledgers"] == ["heap"]
    failures = [f for f in data["findings"] if f["fail_at"] is not None]
    assert failures  # injected-failure paths found: OpenSSL's "malloc failure" left queued
    assert any(
        e == ["common libcrypto routines", "malloc failure"]
        for f in failures
        for e in f["errors_left"]
    )
    assert not [f for f in failures if f["kind"] in ("crash", "timeout")]


def test_failures_in_pythons_own_allocations_leave_the_worker_usable(
    valid_case: InitCase,
) -> None:
    with IsolatedOracle("pyopenssl", ledgers=["heap"]) as oracle:
        assert oracle.can_fail_allocations
        before = oracle.check(valid_case)
        count = oracle.count_allocations(valid_case)
        assert count > 100  # every malloc of the process during one attempt
        statuses = {
            str(oracle.check(valid_case, fail_at=k).outcome.status) for k in range(1, count + 1)
        }
        after = oracle.check(valid_case)
        assert oracle.restarts == 0
        assert abs(oracle.count_allocations(valid_case) - count) <= 2
    assert statuses <= {"accepted", "rejected"}  # no exception, no crash
    assert "rejected" in statuses
    assert before.clean
    assert after.clean
    assert after.outcome == before.outcome


@pytest.mark.parametrize(("build", "leaks"), [("leaky", True), ("fixed", False)])
def test_failing_mallocs_of_a_library_without_openssl(
    malloc_controls: dict[str, Path], valid_case: InitCase, build: str, leaks: bool
) -> None:
    # The leaky build forgets the copies it made when a later copy's malloc
    # fails ("init: out of memory"); no OpenSSL ledger could fail those.
    with IsolatedOracle(f"c:{malloc_controls[build]}") as oracle:
        assert oracle.can_fail_allocations
        count = oracle.count_allocations(valid_case)
        verdicts = [oracle.check(valid_case, fail_at=k) for k in range(1, count + 1)]
    assert any(v.outcome.message == "init: out of memory" for v in verdicts)
    found = [f for v in verdicts for f in v.findings]
    assert all(f.kind is FindingKind.LEAK and f.fail_at is not None for f in found)
    assert bool(found) is leaks


class _Injector:
    """A ledger that can fail allocations and counts nothing (for the oracle's rule)."""

    name = "injector"
    armed = 0

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def snapshot(self) -> dict[str, int]:
        return {}

    def reset_allocations(self) -> None: ...

    def allocations(self) -> int:
        return 1

    def fail_at(self, k: int) -> None:
        self.armed = k


def test_enomem_from_python_under_injection_is_a_rejection() -> None:
    # A failed malloc inside open() or a socket call surfaces in Python as
    # OSError(ENOMEM), the right reaction to the failure, as MemoryError is.
    injector = _Injector()

    def init(case: InitCase) -> None:
        if injector.armed:
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        raise OSError(errno.EACCES, "Permission denied")

    with Oracle(CallableTarget(init), ledgers=[injector]) as oracle:
        failed = oracle.check(InitCase(), fail_at=1)
        plain = oracle.check(InitCase())
    assert str(failed.outcome.status) == "rejected"
    assert failed.clean
    assert [f.kind for f in plain.findings] == [FindingKind.EXCEPTION]  # not under injection


# -- which ledgers see what ------------------------------------------------------------


def test_heap_is_a_default_ledger_and_sees_every_built_in_target() -> None:
    found = {t.name: t for t in survey(list(TARGETS)).targets}
    for name in TARGETS:
        sights = {s.ledger: s for s in found[name].sights}
        assert sights["heap"].sees is True, name
        assert "heap" in found[name].seen_by()
    with IsolatedOracle("ssl") as oracle:
        assert oracle.ledger_names == ["openssl-heap", "heap", "fds"]
    with IsolatedOracle("pyopenssl") as oracle:
        assert "heap" in oracle.ledger_names
