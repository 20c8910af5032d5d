"""One worker of a fuzz campaign: atheris (libFuzzer) driving the oracle.

Started by :mod:`tlsleak.fuzz.campaign` as ``python -m tlsleak.fuzz.worker``, one per
``--jobs``, each a fresh interpreter with the OpenSSL heap shim preloaded
(see :mod:`tlsleak.check.worker`): the shim's hooks can only be installed before
OpenSSL's first allocation.  Not for users; the interface may change.

Every input is decoded as an init case (decoding is total) and checked by the
oracle; what the input wrote to the worker's log is read back for a
pass-phrase prompt, a ``prompt`` finding as in ``check``
(:mod:`tlsleak.check.prompts`). A finding is not raised (that would end
libFuzzer): the worker tells the campaign about it and goes on. The campaign
hears from the worker over a pipe of its own (``--events FD``, not stdout or
stderr, which libFuzzer and the code under test write to), one JSON object a
line:

``ready``
    running: the first input is being checked (the target's name and ledgers,
    and ``network``: whether the worker is off the network, see below).
    A worker that never sends it did no work (libFuzzer refused a flag, the
    dictionary is missing, ...).
``error``
    could not set up (unknown target, inactive ledger): ``message``.
``finding``
    the first time this worker sees a signature: the finding and the input.
``stats``
    at most every :data:`STATS_EVERY` seconds: executions so far, features
    seen for the first time, and repeats of known signatures since last time
    (keyed ``"<step>\\t<signature>"``).

The worker stops on its own at ``--until`` (a Unix time), or when the
campaign sends SIGTERM or SIGINT: either only raises a flag, and the next
input sends the last stats and leaves with ``os._exit(0)`` (raising from
inside the fuzzed function would be a crash to libFuzzer).  When libFuzzer
ends the process itself (``-runs=N``), a C ``atexit`` handler sends the last
stats.  When the campaign itself is gone, the next write fails and the
worker leaves too.

With ``--fail-alloc``, where the heap interposer is the process's malloc,
atheris's coverage hooks are wrapped (:func:`quiet_hooks`) so that what they
allocate in the middle of the target's traced code is neither numbered nor
failed: the k-th allocation of an attempt is the target's k-th, as in an
untraced ``replay``, and a failure never lands in the fuzzer's own code.

With guidance on (the default), the features of each attempt
(:mod:`tlsleak.fuzz.guidance`) hit coverage counters of their own, so libFuzzer
keeps inputs that reach a new OpenSSL error or allocation bucket; ``--plain``
leaves libFuzzer with Python coverage alone (the features are still counted
and reported, which is what a comparison needs).

Before anything else (atheris, the target) the worker moves into a network
namespace of its own with only loopback up (:mod:`tlsleak._netns`): a
target that reaches for the network during init (an SNTP query, say) gets
``ENETUNREACH`` instead of sending one packet per input.  When that is not
possible the worker runs anyway, and its ``ready`` event says why.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final

from tlsleak._netns import isolate
from tlsleak.fuzz.instrumentation import instrumented_packages, not_instrumented

__all__ = ["ATHERIS_HOOKS", "STATS_EVERY", "main", "quiet_hooks"]

#: Seconds between two stats events of a worker.
STATS_EVERY: Final = 0.5
# When to freeze what is alive out of the collector's way: after the first
# inputs have filled the caches, then now and then.
_SETTLE_AT: Final = frozenset({1, 100})
_SETTLE_EVERY: Final = 10_000


class _Events:
    """The pipe to the campaign; a write to a campaign that is gone ends the worker."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, **event: Any) -> None:
        data = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:
            os._exit(0)  # the campaign is gone: nobody to fuzz for


#: atheris's functions that instrumented bytecode calls, looked up on the
#: module at every call (``LOAD_CONST atheris; LOAD_ATTR _trace_branch``).
ATHERIS_HOOKS: Final = ("_trace_branch", "_trace_cmp", "_trace_regex_match")


def quiet_hooks(atheris: Any) -> bool:
    """Wrap atheris's hooks so that their allocations are not numbered or failed.

    Under ``--fail-alloc`` the heap interposer fails the k-th allocation of
    the whole process, and the hooks in the target's traced code allocate
    (pybind11's argument vectors, on every call): failed there, a hook
    returns NULL without an exception (``SystemError``) or throws
    ``std::bad_alloc``, a false finding that no untraced replay gives, and
    numbered there they move the target's own allocations away from the
    numbers ``replay`` gives them.  Each hook becomes
    :meth:`~tlsleak.ledgers.interposer.Interposer.quiet` of itself; coverage
    is unchanged.  Call it once libFuzzer runs: ``atheris.Fuzz()`` puts the
    hooks that feed libFuzzer in place of the ones before it.  False (and
    nothing done) where the interposer is not the process's malloc.
    """
    from tlsleak.ledgers.interposer import interposer, is_interposing

    if not is_interposing():
        return False
    heap = interposer()
    for name in ATHERIS_HOOKS:
        hook = getattr(atheris, name, None)
        if hook is not None:  # an atheris without one of them never calls it
            setattr(atheris, name, heap.quiet(hook))
    return True


#: Kept alive for as long as the process: libc calls it at exit.
_AT_EXIT: list[Any] = []


def _at_c_exit(callback: Callable[[], None]) -> None:
    """Call ``callback`` when the process ends through C's ``exit()``.

    libFuzzer ends the process with ``exit()`` after ``-runs=N``, which
    skips Python's :mod:`atexit`; a C handler still runs, and the last stats
    get out.  Best effort: a libc without ``__cxa_atexit`` just loses them.
    """
    handler = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _arg: callback())
    try:
        register = ctypes.CDLL(None).__cxa_atexit
    except (AttributeError, OSError):
        return
    _AT_EXIT.append(handler)
    register(handler, None, None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlsleak.fuzz.worker")
    parser.add_argument("target")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--until", type=float, default=None)
    parser.add_argument("--replays", type=int, default=3)
    parser.add_argument("--plain", action="store_true")
    parser.add_argument("--mutator", choices=["structure", "bytes"], default="bytes")
    parser.add_argument("--fail-alloc", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Off the network while this is one thread, before atheris and the target.
    network = isolate()
    import atheris

    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after "--" is libFuzzer's.
    split = argv.index("--") if "--" in argv else len(argv)
    args = _parser().parse_args(argv[:split])
    libfuzzer = argv[split + 1 :]
    events = _Events(args.events)

    with atheris.instrument_imports(
        include=instrumented_packages(args.target),
        exclude=not_instrumented(args.target, fail_alloc=args.fail_alloc),
    ):
        from tlsleak.cases.case import decode
        from tlsleak.check.oracle import Oracle
        from tlsleak.ledgers import LedgerUnavailable
        from tlsleak.targets import UnknownTarget, resolve_target

        try:
            target = resolve_target(args.target)
            oracle = Oracle(target, replays=args.replays).start()
        except (UnknownTarget, LedgerUnavailable, ValueError, KeyError) as exc:
            events.send(ev="error", message=str(exc).strip("'\""))
            return 2
    from tlsleak.check.failalloc import case_runner
    from tlsleak.check.oracle import settle_collector
    from tlsleak.check.prompts import StderrLog, with_prompt

    stderr = StderrLog()  # the worker's log, opened for reading too (fuzz/child.py)

    try:  # --fail-alloc: each input fails the allocation it names (see check_case)
        run_case = case_runner(oracle, fail_alloc=args.fail_alloc)
    except ValueError as exc:
        events.send(ev="error", message=str(exc))
        return 2
    from tlsleak.fuzz.guidance import (
        POOL_SIZE,
        FeatureCounters,
        default_site_mode,
        features,
        site_recorder,
    )

    try:  # allocation sites (a feature family of their own) where the interposer is preloaded
        sites = site_recorder(default_site_mode(target))
    except ValueError as exc:
        events.send(ev="error", message=str(exc))
        return 2
    counters = None
    if not args.plain:
        # Looked up at each call: a reference taken before atheris.Fuzz() is
        # atheris's pre-fuzzing function, whose hits libFuzzer never sees.
        counters = FeatureCounters(
            [atheris._reserve_counter() for _ in range(POOL_SIZE)],
            lambda counter: atheris._trace_branch(counter),
        )

    stopping = []

    def stop(_signum: int, _frame: object) -> None:
        stopping.append(True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    seen: set[str] = set()
    fresh: list[str] = []
    sent: set[str] = set()
    repeats: Counter[str] = Counter()
    execs = 0
    last = time.monotonic()

    def report() -> None:
        nonlocal last
        events.send(ev="stats", execs=execs, new=fresh, repeats=dict(repeats))
        fresh.clear()
        repeats.clear()
        last = time.monotonic()

    def test_one_input(data: bytes) -> None:
        nonlocal execs
        if not execs:
            if args.fail_alloc:
                quiet_hooks(atheris)
            # Only now is libFuzzer running: until here a bad flag or a
            # missing dictionary still ends the worker without any work.
            events.send(
                ev="ready",
                target=target.name,
                ledgers=[x.name for x in oracle.ledgers],
                network=network.to_json(),
            )
        case = decode(data)
        if sites is not None:
            sites.begin()
        mark = stderr.mark()
        verdict, point = run_case(case)
        if stderr.prompted_since(mark):
            at = None if point is None else point.fail_at
            verdict = with_prompt(verdict, target.name, at)
        execs += 1
        if execs in _SETTLE_AT or execs % _SETTLE_EVERY == 0:
            settle_collector()  # see its docstring: full collections stay cheap
        found = features(verdict, sites.end() if sites is not None else ())
        if counters is not None:
            counters.hit(found if sites is None else sites.fed(found))
        new = found - seen
        if new:
            seen.update(new)
            fresh.extend(sorted(new))
        for finding in verdict.findings:
            signature = finding.signature
            if signature in sent:
                # Keyed by step too: one leak signature covers every step
                # its missing free shows behind, and the summary says which.
                repeats[f"{finding.step or '-'}\t{signature}"] += 1
            else:
                sent.add(signature)
                events.send(ev="finding", finding=finding.to_json(), data=data.hex())
        if stopping or (args.until is not None and time.time() >= args.until):
            report()
            events.send(ev="done")
            os._exit(0)
        if time.monotonic() - last >= STATS_EVERY:
            report()

    def last_words() -> None:
        report()
        events.send(ev="done")

    _at_c_exit(last_words)
    if args.mutator == "structure":
        from tlsleak.cases.mutator import custom_crossover, custom_mutator

        atheris.Setup(
            [sys.argv[0], *libfuzzer],
            test_one_input,
            custom_mutator=functools.partial(custom_mutator, fail_alloc=args.fail_alloc),
            custom_crossover=functools.partial(custom_crossover, fail_alloc=args.fail_alloc),
        )
    else:
        atheris.Setup([sys.argv[0], *libfuzzer], test_one_input)
    atheris.Fuzz()
    return 0  # not reached: libFuzzer exits the process


if __name__ == "__main__":
    sys.exit(main())
