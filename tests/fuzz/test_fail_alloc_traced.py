"""fuzz --fail-alloc through the heap interposer: atheris's hooks are not numbered or failed.

The heap interposer fails the k-th allocation of the whole process, and in a
campaign worker atheris's hooks run inside the target's traced code and
allocate (pybind11 argument vectors on every call).  Before the worker wrapped
them (:func:`tlsleak.fuzz.worker.quiet_hooks`), failing one of those gave
false findings: ``SystemError: error return without exception set``,
``MemoryError: std::bad_alloc``, crashed workers, none reproducible by an
untraced ``replay``.

Controls, on ``tests/c/control_malloc.c`` (no OpenSSL at all, so only the
heap interposer can fail its allocations; ``tlsleak.targets.clib``, the
``c:`` target's Python side, is traced):

* negative: the correct build (``-DCONTROL_FIXED``) under ``--fail-alloc``
  gives no finding in 3,000 executions (before the fix: a false crash every
  few hundred executions, see docs/fuzzing.md);
* positive: the same build with the NULL of the key's copy left unchecked
  crashes only when that one ``malloc`` fails: the campaign finds it, stores
  its fail point, and ``replay`` reproduces it.

And the mechanism itself, in preloaded children: a quiet call's allocations
are neither counted nor failed, on its own thread only, and results and
exceptions pass through.  What quiet hooks cannot cover (an instrumented
function's frame object, big enough to come from malloc) is why a
``--fail-alloc`` worker leaves grpc's init path untraced
(:data:`~tlsleak.fuzz.instrumentation.UNTRACED_WHEN_FAILING`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tlsleak.cases.case import decode
from tlsleak.check.findings import load_stored
from tlsleak.cli import main
from tlsleak.fuzz.campaign import Campaign, CampaignOptions, CampaignStatus
from tlsleak.fuzz.instrumentation import (
    TARGET_MODULES,
    UNTRACED_WHEN_FAILING,
    not_instrumented,
)
from tlsleak.ledgers import heap_available
from tlsleak.ledgers.shim import preload_env

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the interposer is built for Linux (LD_PRELOAD)"
)

GENEROUS = 300.0
C_SOURCE = Path(__file__).parents[1] / "c" / "control_malloc.c"
#: The fixed control's check of its three copies; the planted bug drops the key's.
CHECKED = "if (tls->ca == NULL || tls->cert == NULL || tls->key == NULL) {"
PLANTED = "if (tls->ca == NULL || tls->cert == NULL) { /* the bug: key unchecked */"

PRELUDE = """
import ctypes, json, threading, types
from tlsleak.ledgers.interposer import interposer
h = interposer()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def allocate(n):
    return [libc.malloc(1000) for _ in range(n)]
def out(**kw):
    print(json.dumps(kw))
"""


def _child(code: str) -> Any:
    """Run ``code`` in a fresh preloaded interpreter; it reports with out(...) last."""
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        env=preload_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the interposer's quiet calls ------------------------------------------------------


def test_a_quiet_calls_allocations_are_neither_numbered_nor_failed() -> None:
    got = _child(
        """
        quiet = h.quiet(allocate)
        h.reset_allocations()
        blocks0 = h.counts(thread=True)[0]
        made = quiet(5)
        counted_quiet, blocks1 = h.allocations(), h.counts(thread=True)[0]
        h.reset_allocations()
        loud = allocate(5)
        counted_loud = h.allocations()
        h.fail_at(1)
        quiet_under_fail = quiet(5)  # none of them is the first: all five succeed
        first_loud = libc.malloc(1000)  # the first numbered one fails
        h.fail_at(0)
        for p in [*made, *loud, *quiet_under_fail]:
            libc.free(p)
        out(counted_quiet=counted_quiet, kept=blocks1 - blocks0, counted_loud=counted_loud,
            quiet_under_fail=[bool(p) for p in quiet_under_fail], first_loud=first_loud)
        """
    )
    assert got["counted_quiet"] == 0
    assert got["kept"] == 5  # their blocks still count: a block made quiet and freed loud balances
    assert got["counted_loud"] >= 5  # (and what Python allocated for the list)
    assert all(got["quiet_under_fail"])
    assert got["first_loud"] is None


def test_a_quiet_call_passes_results_and_exceptions_and_stays_on_its_thread() -> None:
    got = _child(
        """
        seen = []
        def in_a_thread():
            t = threading.Thread(target=lambda: seen.append(h.in_quiet_call()))
            t.start(); t.join()
            return h.in_quiet_call()
        def boom():
            raise KeyError("boom")
        try:
            h.quiet(boom)()
            raised = None
        except KeyError as exc:
            raised = str(exc)
        out(result=h.quiet(lambda a, b: a < b)(1, 2), inside=h.quiet(in_a_thread)(),
            thread=seen, raised=raised, after=h.in_quiet_call(),
            nested=h.quiet(h.quiet(h.in_quiet_call))())
        """
    )
    assert got["result"] is True
    assert got["inside"] is True
    assert got["thread"] == [False]  # another thread's allocations are still numbered
    assert got["raised"] == "'boom'"
    assert got["after"] is False
    assert got["nested"] is True


def test_quiet_hooks_wraps_each_hook_in_place() -> None:
    got = _child(
        """
        from tlsleak.fuzz.worker import ATHERIS_HOOKS, quiet_hooks
        calls = []
        def hook(*args):
            calls.append((args, h.in_quiet_call()))
            return args[0] < args[1] if len(args) > 1 else None
        fake = types.SimpleNamespace(**{name: hook for name in ATHERIS_HOOKS})
        done = quiet_hooks(fake)
        result = fake._trace_cmp(1, 2, 0, 7, False)
        fake._trace_branch(3)
        out(done=done, result=result, calls=calls,
            wrapped=[getattr(fake, n) is not hook for n in ATHERIS_HOOKS])
        """
    )
    assert got["done"] is True
    assert got["result"] is True
    assert got["calls"] == [[[1, 2, 0, 7, False], True], [[3], True]]
    assert all(got["wrapped"])


def test_quiet_hooks_skips_a_hook_this_atheris_does_not_have() -> None:
    got = _child(
        """
        from tlsleak.fuzz.worker import quiet_hooks
        fake = types.SimpleNamespace(_trace_branch=lambda counter: h.in_quiet_call())
        out(done=quiet_hooks(fake), quiet=fake._trace_branch(1), others=sorted(vars(fake)))
        """
    )
    assert got == {"done": True, "quiet": True, "others": ["_trace_branch"]}


@pytest.mark.skipif(heap_available(), reason="pytest itself runs preloaded")
def test_quiet_hooks_leaves_the_hooks_alone_without_the_interposer() -> None:
    import types

    from tlsleak.fuzz.worker import ATHERIS_HOOKS, quiet_hooks

    def hook(*_args: object) -> None:
        return None

    fake = types.SimpleNamespace(**dict.fromkeys(ATHERIS_HOOKS, hook))
    assert quiet_hooks(fake) is False
    assert all(getattr(fake, name) is hook for name in ATHERIS_HOOKS)


# -- campaigns on a library only the heap interposer can fail ---------------------------


@pytest.fixture(scope="module")
def heap_only(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """control_malloc.c built fixed, and fixed but for an unchecked key copy; no OpenSSL."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    folder = tmp_path_factory.mktemp("heap-only")
    text = C_SOURCE.read_text()
    assert CHECKED in text
    built = {}
    for name, source in (("fixed", text), ("planted", text.replace(CHECKED, PLANTED))):
        c_file = folder / f"{name}.c"
        c_file.write_text(source)
        out = folder / f"malloc-{name}.so"
        cmd = [gcc, "-shared", "-fPIC", "-O1", "-DCONTROL_FIXED", "-o", str(out), str(c_file)]
        subprocess.run(cmd, check=True, capture_output=True)
        built[name] = out
    return built


def test_the_c_targets_python_side_is_traced() -> None:
    # What makes the campaigns below a control: atheris's hooks run inside the attempt.
    assert "tlsleak.targets.clib" in TARGET_MODULES
    assert "tlsleak.targets.clib" not in not_instrumented("c:/x/lib.so", fail_alloc=True)


def test_grpc_is_traced_except_under_fail_alloc() -> None:
    # Traced, its frames' objects are big enough to come from malloc, and failing
    # one loses the MemoryError (SystemError): not the target's bug.
    grpc = "tlsleak.targets.grpc_target"
    assert {grpc} == UNTRACED_WHEN_FAILING
    assert grpc not in not_instrumented("grpc")
    assert grpc in not_instrumented("grpc", fail_alloc=True)
    assert "tlsleak.targets.mongoose" not in not_instrumented("mongoose", fail_alloc=True)
    assert "tlsleak.targets.mbedtls" in not_instrumented("mbedtls")  # never traced
    # The rest of tlsleak is left alone either way.
    assert set(not_instrumented("grpc")) < set(not_instrumented("grpc", fail_alloc=True))


def test_a_correct_heap_only_library_gives_no_finding_under_fail_alloc(
    heap_only: dict[str, Path], small_corpus: Path, tmp_path: Path
) -> None:
    options = CampaignOptions(
        f"c:{heap_only['fixed']}",
        tmp_path / "out",
        corpus=small_corpus,
        seconds=GENEROUS,
        minimize_budget=0,
        fail_alloc=True,
        libfuzzer_flags=("-runs=3000",),
    )
    status = Campaign(options).run()
    assert status.execs >= 3000
    assert status.findings == [], [(f.kind, f.summary) for f in status.findings]
    assert status.restarts == 0
    kept = [decode(p.read_bytes()) for p in small_corpus.iterdir() if not p.name.startswith(".")]
    assert any(case.fail_alloc is not None for case in kept)  # failing runs did happen


def test_a_crash_only_a_failed_malloc_reaches_is_found_and_replays(
    heap_only: dict[str, Path], small_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    options = CampaignOptions(
        f"c:{heap_only['planted']}",
        out,
        corpus=small_corpus,
        seconds=GENEROUS,
        minimize_budget=8,
        fail_alloc=True,
    )
    box: list[Campaign] = []

    def on_status(status: CampaignStatus) -> None:
        if any(f.kind == "crash" for f in status.findings):
            box[0].stop()

    box.append(Campaign(options, on_status=on_status))
    status = box[0].run()
    kinds = sorted(f.kind for f in status.findings)
    assert kinds == ["crash"], [(f.kind, f.summary) for f in status.findings]
    folder = status.findings[0].folder
    assert folder is not None
    point = load_stored(folder).fail_point
    assert point is not None  # found again in a fresh process, with its warm-up count
    assert decode((folder / "reproducer").read_bytes()).fail_alloc == point.fail_at
    assert main(["replay", str(folder), "--replays", "1"]) == 1
