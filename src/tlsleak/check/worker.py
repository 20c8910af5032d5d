"""Run the oracle in a child process, so that a crash or a hang is a finding, not the end.

A C init path can crash (SIGSEGV, abort) or hang on an input; run in the tool's
own process it would take the run down with it.  :class:`IsolatedOracle` keeps
the same interface as :class:`~tlsleak.check.oracle.Oracle` but runs it in a child
interpreter (``python -m tlsleak.check.worker``).  The child is started the way the
ledgers need: with the OpenSSL heap shim preloaded (``LD_PRELOAD``) when it is
built, since its hooks can only be installed before OpenSSL's first
allocation.  When the child dies on a signal or does not answer within the
timeout, the case gets a ``crash`` or ``timeout`` finding and a new child is
started for the next case.

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
import time
from collections.abc import Sequence
from typing import Any, Final

from tlsleak.cases.case import InitCase, decode
from tlsleak.check.oracle import (
    DEFAULT_REPLAYS,
    Finding,
    FindingKind,
    Oracle,
    Verdict,
    settle_collector,
)
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
    """An :class:`~tlsleak.check.oracle.Oracle` for ``target`` (a spec), run in a child process."""

    def __init__(
        self,
        target: str,
        *,
        ledgers: Sequence[str] | None = None,
        replays: int = DEFAULT_REPLAYS,
        timeout: float = DEFAULT_TIMEOUT,
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
        self._proc: subprocess.Popen[bytes] | None = None
        self._to_child = -1
        self._from_child = -1

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> IsolatedOracle:
        if self._proc is None:
            self._spawn()
        return self

    def close(self) -> None:
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

    def _spawn(self) -> None:
        req_read, req_write = os.pipe()
        resp_read, resp_write = os.pipe()
        argv = [sys.executable, "-m", "tlsleak.check.worker", self.spec]
        argv += [str(req_read), str(resp_write)]
        argv += ["--replays", str(self.replays)]
        for name in self.ledger_names or ():
            argv += ["--ledger", name]
        try:
            self._proc = subprocess.Popen(
                argv,
                env=child_env(),
                pass_fds=(req_read, resp_write),
                stdin=subprocess.DEVNULL,
                # No controlling terminal: OpenSSL asks for a PEM pass phrase
                # on /dev/tty itself (not stdin) when a blob says it is
                # encrypted and no callback is given, and a fuzz input must
                # not stop a run to wait for someone to type.  Ctrl-C goes to
                # the parent, which ends the child by closing its pipes.
                start_new_session=True,
            )
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
            self.close()
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
            self.close()
            raise WorkerError(message)
        self.target_name = reply["target"]
        self.ledger_names = reply["ledgers"]
        self.can_fail_allocations = reply["injector"]

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
        self.close()
        self.restarts += 1
        if timed_out:
            kind, message = FindingKind.TIMEOUT, f"no answer within {self.timeout:g}s"
        elif code < 0:
            kind, message = FindingKind.CRASH, f"killed by {signal.Signals(-code).name}"
        else:
            kind, message = FindingKind.CRASH, f"worker exited with status {code}"
        outcome = Outcome(Status.ERROR, None, (), message)
        finding = Finding(kind, self.target_name, case, outcome, fail_at=fail_at)
        return Verdict(case, outcome, (finding,))


# -- the child -------------------------------------------------------------------------


def _serve(oracle: Oracle, requests: int, replies: int) -> None:
    while (payload := _read(requests)) is not None:
        op, fail_at = _REQUEST.unpack_from(payload)
        case = decode(payload[_REQUEST.size :])
        if op == _COUNT:
            _write(replies, json.dumps({"allocations": oracle.count_allocations(case)}).encode())
            continue
        verdict = oracle.check(case, fail_at=fail_at or None)
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
    from tlsleak.ledgers import LedgerUnavailable
    from tlsleak.targets import UnknownTarget, resolve_target

    parser = argparse.ArgumentParser(prog="tlsleak.check.worker")
    parser.add_argument("target")
    parser.add_argument("requests", type=int)
    parser.add_argument("replies", type=int)
    parser.add_argument("--replays", type=int, default=DEFAULT_REPLAYS)
    parser.add_argument("--ledger", action="append", dest="ledgers")
    args = parser.parse_args(argv)
    try:
        target = resolve_target(args.target)
        oracle = Oracle(target, ledgers=args.ledgers, replays=args.replays).start()
    except (UnknownTarget, LedgerUnavailable, ValueError, KeyError) as exc:
        message = str(exc).strip("'\"")
        if isinstance(exc, LedgerUnavailable):
            message = f"ledger not active, nothing would be measured: {message}"
        _write(args.replies, json.dumps({"error": message}).encode())
        return 2
    settle_collector()  # this process only runs the oracle: see settle_collector
    ready = {
        "target": target.name,
        "ledgers": [ledger.name for ledger in oracle.ledgers],
        "injector": oracle.injector is not None,
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
