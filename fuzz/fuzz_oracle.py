#!/usr/bin/env python3
"""Fuzz a TLS init path for leaks in its error paths.

Bug class: resource leaks (OpenSSL objects or file descriptors still live
after the attempt), entries left on OpenSSL's error queue, and exceptions that
are not a documented rejection - all in the error paths of TLS initialisation
code, reached with malformed certificate and key blobs.

Every input decodes to an init case (decoding is total: no input is wasted),
the tlsleak oracle runs it on the target named by ``TLSLEAK_TARGET`` (default
``pyopenssl``; any name ``tlsleak targets`` lists, or ``package.module:function``)
and any finding is raised as ``tlsleak.LeakError``, so libFuzzer reports a crash
and keeps the input as ``crash-<sha1>``.  Replay one by passing the file:

    python fuzz/fuzz_oracle.py crash-<sha1>
"""

from __future__ import annotations

import sys

import atheris

from _instrument import NOT_INSTRUMENTED, TARGET_SPEC, instrumented_packages

with atheris.instrument_imports(include=instrumented_packages(), exclude=NOT_INSTRUMENTED):
    import tlsleak
    from tlsleak.check.oracle import settle_collector
    from tlsleak.targets import resolve_target

    # Resolving imports the target's module (built-in targets are imported
    # lazily); it has to happen inside this block to be instrumented.
    TARGET = resolve_target(TARGET_SPEC)

_oracle: tlsleak.Oracle | None = None


def _get_oracle() -> tlsleak.Oracle:
    # Started once, on the first input, and left running: the object ledger
    # interposes on the OpenSSL binding for as long as it counts, and setting
    # that up per input would cost more than the input itself.  Lazily, so that
    # importing this module (tests, tooling) starts nothing.  libFuzzer ends
    # the process without unwinding, so there is no close() to call.
    global _oracle
    if _oracle is None:
        _oracle = tlsleak.Oracle(TARGET).start()
        # This process only fuzzes: keep the oracle's full collections cheap
        # (see tlsleak.check.oracle.settle_collector).
        settle_collector()
    return _oracle


def TestOneInput(data: bytes) -> None:
    case = tlsleak.decode(data)
    # Nothing is caught here: the target turns rejections into outcomes, and
    # anything else the path raises is already an "exception" finding.
    verdict = _get_oracle().check(case)
    if verdict.findings:
        raise tlsleak.LeakError(verdict.findings)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
