"""Run the oracle in a child process, so that a crash or a hang is a finding, not the end.

A C init path can crash (SIGSEGV, abort) or hang on an input; run in the tool's
own process it would take the run down with it.  :class:`IsolatedOracle` keeps
the same interface as :class:`~tlsleak.check.oracle.Oracle` but runs it in a child
interpreter (``python -m tlsleak.check.worker``).  The child is started the way the
ledgers need: with the OpenSSL heap shim preloaded (``LD_PRELOAD``) when it is
built, since its hooks can only be installed before OpenSSL's first
allocation.  When the child dies on a signal or does not answer within the
timeout, the case gets a ``crash`` or ``timeout`` finding and a new child is
started at once; if that one cannot start, the crash verdict is still
returned, and :attr:`IsolatedOracle.failure` says (one line) why no case can
be checked any more.

The child has no terminal: it runs in a session of its own, reads stdin from
``/dev/null``, and writes stderr to a log file (given, or a private temporary
one removed by :meth:`IsolatedOracle.close`), never to the user's terminal.
OpenSSL's default password callback, used when the code under test gives
none, then writes its "Enter PEM pass phrase:" to that stderr and reads
nothing: the child reads its stderr back after each case and gives the case
a ``prompt`` finding when a pass-phrase prompt appeared (:mod:`tlsleak.check.prompts`).

The child is kept off the network: before it imports the target it moves
into a network namespace of its own with only loopback up
(:mod:`tlsleak._netns`), and its ready message says whether that worked
(:attr:`IsolatedOracle.network`), so that a report can say when it did not.

With ``python=PATH`` the child runs under another interpreter (a user's
venv, so that their own pyOpenSSL and cryptography are what is tested): the
path is probed first (executable, Python 3.11 or newer), and the ``tlsleak``
package is shipped to the child in a private temporary folder on its
``PYTHONPATH`` rather than installed into that venv (:mod:`tlsleak.check._ship`,
docs/python.md).  Nothing the child imports before the target needs more than
the standard library.  The ready message names the interpreter and the
pyOpenSSL and cryptography it loaded (:attr:`IsolatedOracle.runtime`).

The parent and the child talk over two pipes of their own (not stdin and
stdout, which the code under test may use): each message is a 4-byte
big-endian length and that many bytes.  Requests are an operation byte, an
8-byte allocation number and the encoded case; replies are JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from tlsleak._netns import Network, isolate
from tlsleak.cases.case import InitCase, decode
from tlsleak.check._ship import Interpreter, PythonRefused, Shipment, probe_python
from tlsleak.check.oracle import (
    DEFAULT_REPLAYS,
    Finding,
    FindingKind,
    Oracle,
    Verdict,
    settle_collector,
)
from tlsleak.check.prompts import StderrLog, with_prompt
from tlsleak.openssl.errors import OpenSSLError
from tlsleak.targets import Outcome, Status

__all__ = ["DEFAULT_TIMEOUT", "IsolatedOracle", "WorkerError", "child_env"]

#: Seconds a case (with its replays) may take before it is a ``timeout`` finding.
DEFAULT_TIMEOUT: Final = 30.0

_CHECK, _COUNT = b"C", b"A"
_HEADER = struct.Struct(">I")
_REQUEST = struct.Struct(">cq")


class WorkerError(RuntimeError):
    """The child could not be set up (bad target, inactive ledger): one line for the user."""


def _write(fd: int, payload: bytes) -> None:
    data = _HEADER.pack(len(payload)) + payload
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes | None:
    """``size`` bytes from ``fd``; None at end of file; TimeoutError past ``deadline``."""
    chunks: list[bytes] = []
    while size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read(fd: int, deadline: float | None = None) -> bytes | None:
    header = _read_exact(fd, _HEADER.size, deadline)
    if header is None:
        return None
    return _read_exact(fd, _HEADER.unpack(header)[0], deadline)


def child_env() -> dict[str, str]:
    """The environment for a child process: with the heap shim preloaded when it is built."""
    try:
        # Imported by name: the native module exists only where the shim was
        # built into the package, and a missing one just means no preload.
        native = importlib.import_module("tlsleak.ledgers.shim")
        native.shim_path()
    except Exception:  # no shim: the heap ledger will say so if asked for
        return dict(os.environ)
    env: dict[str, str] = native.preload_env(os.environ)
    return env


class IsolatedOracle:
    """An :class:`~tlsleak.check.oracle.Oracle` for ``target`` (a spec), run in a child process.

    ``log`` is the file the child's stderr is appended to (private, 0600);
    by default a temporary file that :meth:`close` removes.  ``ledgers=[]``
    counts nothing: the verdicts then only say how each case ended.
    ``python`` is the interpreter to run the child under (default: this one);
    one that is not a Python 3.11 or newer is a :class:`WorkerError` at start.
    """

    def __init__(
        self,
        target: str,
        *,
        ledgers: Sequence[str] | None = None,
        replays: int = DEFAULT_REPLAYS,
        timeout: float = DEFAULT_TIMEOUT,
        log: Path | None = None,
        python: str | None = None,
    ) -> None:
        if replays < 1:
            raise ValueError(f"replays must be at least 1, not {replays}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        self.spec = target
        self.target_name = target
        self.ledger_names = list(ledgers) if ledgers is not None else None
        self.replays = replays
        self.timeout = timeout
        self.can_fail_allocations = False
        self.restarts = 0
        #: Ledgers the child dropped because they cannot see the target, with why.
        self.blind: dict[str, str] = {}
        #: Whether the child is off the network (tlsleak._netns); None until started.
        self.network: Network | None = None
        #: Why no case can be checked any more (the child died on a case and
        #: could not be restarted); checking then raises WorkerError with it.
        self.failure: str | None = None
        self.log = log
        #: The interpreter asked for (None: this one), and what it was found to be.
        self.python = python
        self.interpreter: Interpreter | None = None
        #: The child's interpreter and the pyOpenSSL/cryptography it loaded, one line.
        self.runtime: str | None = None
        self._shipment: Shipment | None = None
        self._own_log: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._to_child = -1
        self._from_child = -1

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> IsolatedOracle:
        if self._proc is None:
            self._spawn()
            self.failure = None
        return self

    def close(self) -> None:
        """End the child, remove the shipped package and the temporary log (a given one is kept)."""
        self._stop()
        if self._shipment is not None:
            self._shipment.remove()
            self._shipment = None
        if self._own_log is not None:
            self._own_log.unlink(missing_ok=True)
            self._own_log = None

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        for fd in (self._to_child, self._from_child):
            if fd >= 0:
                os.close(fd)
        self._to_child = self._from_child = -1
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> IsolatedOracle:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open_log(self) -> tuple[int, Path]:
        """A descriptor for the child's stderr (read-write, so the child can read it back)."""
        if self.log is None and self._own_log is None:
            fd, name = tempfile.mkstemp(prefix="tlsleak-worker-", suffix=".log")
            os.close(fd)
            self._own_log = Path(name)
        path = self.log if self.log is not None else self._own_log
        assert path is not None
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            return os.open(path, flags, 0o600), path
        except OSError as exc:
            raise WorkerError(f"cannot write the worker's log {path}: {exc.strerror}") from None

    def _command(self) -> tuple[list[str], dict[str, str]]:
        """The child's interpreter and environment: this one's, or ``python``'s, tlsleak shipped."""
        if self.python is None:
            return [sys.executable], child_env()
        if self.interpreter is None:
            try:
                self.interpreter = probe_python(self.python)
            except PythonRefused as exc:
                raise WorkerError(str(exc)) from None
        if self._shipment is None:
            try:
                self._shipment = Shipment()
            except OSError as exc:
                raise WorkerError(f"cannot ship tlsleak to {self.python}: {exc}") from None
        return [self.interpreter.path], self._shipment.env(child_env())

    def _spawn(self) -> None:
        python, env = self._command()
        log, log_path = self._open_log()
        try:
            self._spawn_logging_to(log, log_path, python, env)
        finally:
            os.close(log)

    def _spawn_logging_to(
        self, log: int, log_path: Path, python: list[str], env: dict[str, str]
    ) -> None:
        logged = os.fstat(log).st_size  # where this child's stderr starts
        req_read, req_write = os.pipe()
        resp_read, resp_write = os.pipe()
        argv = [*python, "-m", "tlsleak.check.worker", self.spec]
        argv += [str(req_read), str(resp_write)]
        argv += ["--replays", str(self.replays)]
        for name in self.ledger_names or ():
            argv += ["--ledger", name]
        if self.ledger_names == []:  # none at all (tlsleak diff: acceptance only)
            argv.append("--no-ledgers")
        try:
            self._proc = subprocess.Popen(
                argv,
                env=env,
                pass_fds=(req_read, resp_write),
                stdin=subprocess.DEVNULL,
                stderr=log,
                # No controlling terminal: OpenSSL asks for a PEM pass phrase
                # on /dev/tty itself (not stdin) when a blob says it is
                # encrypted and no callback is given, and a fuzz input must
                # not stop a run to wait for someone to type.  Ctrl-C goes to
                # the parent, which ends the child by closing its pipes.
                start_new_session=True,
            )
        except OSError as exc:  # the interpreter went away (or was never runnable)
            os.close(req_write)
            os.close(resp_read)
            raise WorkerError(f"cannot start the worker with {argv[0]}: {exc.strerror}") from None
        finally:
            os.close(req_read)
            os.close(resp_write)
        self._to_child, self._from_child = req_write, resp_read
        # Setting up imports the target and starts the ledgers: generous time.
        startup = max(self.timeout, 60.0)
        try:
            reply = self._receive(time.monotonic() + startup)
        except TimeoutError:
            if self._proc is not None:
                self._proc.kill()
            self._stop()
            raise WorkerError(
                f"target {self.spec!r} could not be set up: no answer within {startup:g}s"
            ) from None
        if reply is None or "error" in reply:
            if reply is not None:
                message = reply["error"]
            else:
                code = self._proc.wait() if self._proc is not None else 0
                how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"status {code}"
                message = f"target {self.spec!r} could not be set up: the worker died ({how})"
                message += _last_words(log_path, logged, kept=self.log is not None)
            self._stop()
            raise WorkerError(message)
        self.target_name = reply["target"]
        self.ledger_names = reply["ledgers"]
        self.blind = dict(reply.get("blind", {}))
        self.can_fail_allocations = reply["injector"]
        self.network = Network.from_json(reply.get("network"))
        self.runtime = reply.get("runtime")

    def _receive(self, deadline: float) -> dict[str, Any] | None:
        payload = _read(self._from_child, deadline)
        return None if payload is None else dict(json.loads(payload))

    # -- checking ------------------------------------------------------------------

    def check(self, case: InitCase, *, fail_at: int | None = None) -> Verdict:
        """The child's verdict on ``case``, or a crash/timeout verdict if it died."""
        reply = self._ask(_CHECK, case, fail_at)
        if isinstance(reply, Verdict):
            return reply
        findings = tuple(Finding.from_json(f) for f in reply["findings"])
        errors = tuple(OpenSSLError(lib, reason) for lib, reason in reply["errors"])
        outcome = Outcome(Status(reply["status"]), reply["step"], errors, reply["message"])
        return Verdict(case, outcome, findings, reply.get("allocations"))

    def count_allocations(self, case: InitCase) -> int:
        reply = self._ask(_COUNT, case, None)
        return reply["allocations"] if isinstance(reply, dict) else 0

    def _ask(self, op: bytes, case: InitCase, fail_at: int | None) -> dict[str, Any] | Verdict:
        if self.failure is not None:
            raise WorkerError(self.failure)
        self.start()
        request = _REQUEST.pack(op, fail_at or 0) + case.encode()
        deadline = time.monotonic() + self.timeout
        try:
            _write(self._to_child, request)
            reply = self._receive(deadline)
        except TimeoutError:
            return self._lost(case, fail_at, timed_out=True)
        except BrokenPipeError:
            reply = None
        if reply is None:
            return self._lost(case, fail_at, timed_out=False)
        return reply

    def _lost(self, case: InitCase, fail_at: int | None, *, timed_out: bool) -> Verdict:
        """The child died or hung on ``case``: make that the finding, start afresh."""
        proc = self._proc
        assert proc is not None
        if timed_out:
            proc.kill()
        code = proc.wait()
        self._stop()
        self.restarts += 1
        if timed_out:
            kind, message = FindingKind.TIMEOUT, f"no answer within {self.timeout:g}s"
        elif code < 0:
            kind, message = FindingKind.CRASH, f"killed by {signal.Signals(-code).name}"
        else:
            kind, message = FindingKind.CRASH, f"worker exited with status {code}"
        outcome = Outcome(Status.ERROR, None, (), message)
        finding = Finding(kind, self.target_name, case, outcome, fail_at=fail_at)
        # Restart now, so that a child that cannot start again is known here:
        # this case keeps its finding, and what comes next gets the reason.
        try:
            self._spawn()
        except WorkerError as exc:
            self.failure = (
                f"the worker died on a case ({message}) and could not be restarted: {exc}"
            )
        return Verdict(case, outcome, (finding,))


def _last_words(log: Path, since: int, *, kept: bool) -> str:
    """The last line a dead child wrote to its stderr, for the one-line error; where the rest is."""
    try:
        with open(log, "rb") as file:
            file.seek(since)
            text = file.read()[-4096:].decode("utf-8", "replace")
    except OSError:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = f": {lines[-1][:200]}" if lines else ""
    return said + (f" (its stderr is in {log})" if kept and lines else "")


# -- the child -------------------------------------------------------------------------

def _serve(oracle: Oracle, requests: int, replies: int) -> None:
    stderr = StderrLog()
    while (payload := _read(requests)) is not None:
        op, fail_at = _REQUEST.unpack_from(payload)
        case = decode(payload[_REQUEST.size :])
        if op == _COUNT:
            _write(replies, json.dumps({"allocations": oracle.count_allocations(case)}).encode())
            continue
        mark = stderr.mark()
        verdict = oracle.check(case, fail_at=fail_at or None)
        if stderr.prompted_since(mark):
            verdict = with_prompt(verdict, oracle.target.name, fail_at or None)
        reply = {
            "status": str(verdict.outcome.status),
            "step": None if verdict.outcome.step is None else str(verdict.outcome.step),
            "errors": [[e.library, e.reason] for e in verdict.outcome.errors],
            "message": verdict.outcome.message,
            "findings": [f.to_json() for f in verdict.findings],
            "allocations": verdict.allocations,
        }
        _write(replies, json.dumps(reply).encode())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the child (``python -m tlsleak.check.worker``); not for users."""
    # Off the network before the target is imported, while this is one thread.
    network = isolate()
    from tlsleak.ledgers import LedgerBlind, LedgerUnavailable
    from tlsleak.targets import UnknownTarget, resolve_target
    from tlsleak.targets._binding import stack_versions

    parser = argparse.ArgumentParser(prog="tlsleak.check.worker")
    parser.add_argument("target")
    parser.add_argument("requests", type=int)
    parser.add_argument("replies", type=int)
    parser.add_argument("--replays", type=int, default=DEFAULT_REPLAYS)
    parser.add_argument("--ledger", action="append", dest="ledgers")
    parser.add_argument("--no-ledgers", action="store_true")
    args = parser.parse_args(argv)
    try:
        target = resolve_target(args.target)
        ledgers = [] if args.no_ledgers else args.ledgers
        oracle = Oracle(target, ledgers=ledgers, replays=args.replays).start()
    except (UnknownTarget, LedgerUnavailable, ValueError, KeyError) as exc:
        # str() of a KeyError quotes its message; other messages keep their own quotes.
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        if isinstance(exc, LedgerUnavailable) and not isinstance(exc, LedgerBlind):
            message = f"ledger not active, nothing would be measured: {message}"
        _write(args.replies, json.dumps({"error": message}).encode())
        return 2
    settle_collector()  # this process only runs the oracle: see settle_collector
    ready = {
        "target": target.name,
        "ledgers": [ledger.name for ledger in oracle.ledgers],
        "blind": oracle.blind,
        "injector": oracle.injector is not None,
        "network": network.to_json(),
        "runtime": stack_versions(),
    }
    _write(args.replies, json.dumps(ready).encode())
    try:
        _serve(oracle, args.requests, args.replies)
    except BrokenPipeError:
        pass  # the parent went away
    finally:
        oracle.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
