"""pyOpenSSL parity: the heap ledger covers pyOpenSSL when both use the system libcrypto."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tlsleak.ledgers.shim import preload_env

SRC = str(Path(__file__).resolve().parents[2] / "src")
PROBE = """
import OpenSSL.SSL as S
from tlsleak import CallableTarget, InitCase, Oracle
from tlsleak.targets import resolve_target

kept = []
def leaky(case):
    kept.append(S.Context(S.TLS_METHOD))

print(",".join(resolve_target("pyopenssl").ledgers))
with Oracle(CallableTarget(leaky)) as oracle:
    [finding] = oracle.check(InitCase()).findings
print(",".join(sorted(finding.delta)))
"""

# Debian's own Python, with python3-openssl and python3-cryptography built on
# the system libcrypto (the machine image has them).
DEBIAN_PYTHON = "/usr/bin/python3"


def _run(python: str, extra_path: str | None = None) -> list[str]:
    env = preload_env(os.environ)
    if extra_path:
        env["PYTHONPATH"] = extra_path
    proc = subprocess.run(
        [python, "-c", PROBE], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_wheel_pyopenssl_is_not_seen_by_the_heap_ledger() -> None:
    # PyPI's cryptography carries its own OpenSSL: no OpenSSL heap ledger; the
    # process heap (every malloc, whatever the stack) sees it.
    ledgers, delta = _run(sys.executable)
    assert ledgers == "openssl-objects,heap,fds"
    assert delta == "SSL_CTX,heap.blocks,heap.bytes"


def test_system_pyopenssl_is_seen_by_the_heap_ledger() -> None:
    probe = (
        subprocess.run(
            [DEBIAN_PYTHON, "-c", "import OpenSSL, cryptography"],
            capture_output=True,
            check=False,
        )
        if os.path.exists(DEBIAN_PYTHON)
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("no Debian python3 with python3-openssl here")
    ledgers, delta = _run(DEBIAN_PYTHON, SRC)
    assert ledgers == "openssl-objects,openssl-heap,heap,fds"
    assert delta == "SSL_CTX,heap.blocks,heap.bytes,openssl-heap.blocks,openssl-heap.bytes"
