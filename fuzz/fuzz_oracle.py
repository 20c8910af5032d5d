#!/usr/bin/env python3
"""Fuzz a TLS init path for leaks in its error paths: the package's entry, from a checkout.

A thin wrapper over :mod:`tlsleak.fuzz.entry`, which an install runs as
``tlsleak-fuzz`` (or ``python -m tlsleak.fuzz.entry``); see that module and
docs/oss-fuzz.md.  Bug class: resource leaks (OpenSSL objects or file
descriptors still live after the attempt), entries left on OpenSSL's error
queue, and exceptions that are not a documented rejection, reached with
malformed certificate and key blobs.

Every input decodes to an init case, the oracle runs it on the target named by
``TLSLEAK_TARGET`` (default ``pyopenssl``) and any finding is raised as
``tlsleak.LeakError``, so libFuzzer reports a crash and keeps the input as
``crash-<sha1>``.  Replay one by passing the file:

    python fuzz/fuzz_oracle.py crash-<sha1>
"""

from __future__ import annotations

import sys

from tlsleak.fuzz.entry import main

if __name__ == "__main__":
    sys.exit(main())
