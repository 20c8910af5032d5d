"""The bare libFuzzer entry point: ``tlsleak-fuzz`` / ``python -m tlsleak.fuzz.entry``.

For driving libFuzzer yourself (your own flags, OSS-Fuzz, ClusterFuzzLite)
rather than through ``tlsleak fuzz``'s campaign.  One process: every input
is decoded as an init case (:func:`tlsleak.decode`, total), the oracle
checks it in-process on the target named by ``TLSLEAK_TARGET`` (default
``pyopenssl``), and any finding is raised as :class:`tlsleak.LeakError`, so
that libFuzzer reports a crash and writes the input to ``crash-<sha1>``
(under ``-artifact_prefix=``).  Every command-line argument is libFuzzer's.

The structure-aware mutator (:mod:`tlsleak.cases.mutator`) is on unless
``TLSLEAK_MUTATOR=bytes``: an environment variable, as the target is, because
the command line belongs to libFuzzer and the environment reaches the
processes libFuzzer starts for ``-jobs``, ``-fork`` and ``-workers``.

Those processes are started by running ``argv[0]`` through the shell with
the same flags; the name ``argv[0]`` gets from a Python interpreter is a
script's path, which is not executable once installed (exit 126) and, made
executable, runs whichever ``python3`` its shebang finds first.
:func:`relaunch_command` hands libFuzzer a command that re-runs this very
interpreter instead.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any, Final

from tlsleak._netns import isolate
from tlsleak.fuzz.instrumentation import instrumented_packages, not_instrumented

__all__ = ["DEFAULT_TARGET", "main", "relaunch_command"]

#: The target when ``TLSLEAK_TARGET`` is unset, as for ``tlsleak check``.
DEFAULT_TARGET: Final = "pyopenssl"
#: This module's name when run with ``python -m`` (``__name__`` is then ``__main__``).
_MODULE: Final = "tlsleak.fuzz.entry"
# When to move what is alive out of the collector's way (as the campaign's
# worker does, see tlsleak.check.oracle.settle_collector): after the first
# inputs have filled the caches, then now and then.
_SETTLE_AT: Final = frozenset({1, 100})
_SETTLE_EVERY: Final = 10_000


def relaunch_command(argv0: str, main_spec: str | None = None) -> str:
    """What libFuzzer runs (through ``sh -c``) to start one more process like this one.

    A frozen program (PyInstaller, as OSS-Fuzz's ``compile_python_fuzzer``
    builds) is its own interpreter: ``argv0`` as it is.  Otherwise this
    interpreter (:data:`sys.executable`, the venv's own) on the same module
    (``main_spec``: ``__main__``'s module name under ``python -m``) or the
    same script, as an absolute path.
    """
    if getattr(sys, "frozen", False):
        return argv0
    if main_spec:
        return shlex.join([sys.executable, "-m", main_spec])
    return shlex.join([sys.executable, os.path.abspath(argv0)])


def _main_spec() -> str | None:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    return name if isinstance(name, str) and name != "__main__" else None


def libfuzzer_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` for ``atheris.Setup``, with ``argv[0]`` a command that re-runs this process."""
    return [relaunch_command(argv[0], _main_spec()), *argv[1:]]


def _load(spec: str) -> tuple[Any, Any]:
    """atheris and a started oracle on ``spec``, the target's code instrumented.

    As a campaign worker does (:mod:`tlsleak.fuzz.worker`): atheris traces the
    target's code and not the decoder, oracle and ledgers that run on every
    input whatever it is.  Raises what resolving or starting raises.
    """
    import atheris

    with atheris.instrument_imports(
        include=instrumented_packages(spec), exclude=not_instrumented(spec)
    ):
        from tlsleak.check.oracle import Oracle
        from tlsleak.targets import resolve_target

        # Resolving imports the target's module (built-in targets are imported
        # lazily); it has to happen inside this block to be instrumented.
        oracle = Oracle(resolve_target(spec)).start()
    return atheris, oracle


def main(argv: Sequence[str] | None = None) -> int:
    """Fuzz ``TLSLEAK_TARGET`` under libFuzzer with ``argv`` (default ``sys.argv``)."""
    # Off the network before atheris and the target, while this is one thread.
    isolate()
    argv = list(sys.argv if argv is None else argv)
    spec = os.environ.get("TLSLEAK_TARGET") or DEFAULT_TARGET
    from tlsleak.ledgers import LedgerUnavailable
    from tlsleak.targets import TargetUnavailable, UnknownTarget

    try:
        atheris, oracle = _load(spec)
    except (UnknownTarget, TargetUnavailable, LedgerUnavailable, ValueError, KeyError) as exc:
        message = str(exc).strip("'\"")  # a KeyError's str() is quoted
        print(f"tlsleak-fuzz: {message}", file=sys.stderr)
        return 2
    from tlsleak.cases.case import decode
    from tlsleak.check.oracle import LeakError, settle_collector

    settle_collector()  # see its docstring: the oracle's full collections stay cheap
    execs = 0

    def test_one_input(data: bytes) -> None:
        nonlocal execs
        # Nothing is caught: the target turns rejections into outcomes, and
        # anything else the path raises is already an "exception" finding.
        verdict = oracle.check(decode(data))
        execs += 1
        if execs in _SETTLE_AT or execs % _SETTLE_EVERY == 0:
            settle_collector()
        if verdict.findings:
            error = LeakError(verdict.findings)
            # atheris prints an uncaught exception on stdout; the finding also
            # goes to stderr, next to libFuzzer's crash report, for the runners
            # and CI logs that keep only that.
            print(f"tlsleak-fuzz: LeakError: {error}", file=sys.stderr, flush=True)
            raise error

    if os.environ.get("TLSLEAK_MUTATOR", "structure") == "bytes":
        atheris.Setup(libfuzzer_argv(argv), test_one_input)
    else:
        from tlsleak.cases.mutator import custom_crossover, custom_mutator

        atheris.Setup(
            libfuzzer_argv(argv),
            test_one_input,
            custom_mutator=custom_mutator,
            custom_crossover=custom_crossover,
        )
    atheris.Fuzz()
    return 0  # not reached: libFuzzer ends the process


if __name__ == "__main__":
    sys.exit(main())
