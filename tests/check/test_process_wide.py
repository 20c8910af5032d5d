"""Checked with a process-wide heap counter, the pyOpenSSL targets get true verdicts.

The typed ledger counts pyOpenSSL's objects only; a process-wide counter
(glibc's ``mallinfo2``: every byte malloc handed out and not freed, by any
library) also sees OpenSSL's error state and the caches a fresh process fills.
Positive control: ``control-leaky`` (loses its SSL_CTX and SSL on every
rejected case) leaks under it; negative control: ``pyopenssl`` shows nothing
on the bundled corpus.  The same for the heap ledger on a pyOpenSSL built on
the system libcrypto (Debian's), where OpenSSL's own error buffers used to
show as ~2-block leaks on 240 of 246 rejected cases.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tlsleak.cases.files import bundled_corpus, case_files, load_case
from tlsleak.check.oracle import FindingKind, Oracle, settle_collector
from tlsleak.ledgers.shim import preload_env
from tlsleak.targets import resolve_target


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


class MallinfoLedger:
    """Bytes in use in malloc's arenas, process-wide (glibc's ``mallinfo2``)."""

    name = "mallinfo2"

    def __init__(self) -> None:
        try:
            self._mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
        except (OSError, AttributeError):
            pytest.skip("glibc >= 2.33 (mallinfo2) is needed")
        self._mallinfo2.restype = _MallInfo2

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def snapshot(self) -> dict[str, int]:
        return {"malloc.bytes": int(self._mallinfo2().uordblks)}


def _leaks(target_name: str) -> list[str]:
    # Python allocates from malloc too (objects over 512 bytes), and a fresh
    # process fills caches over its first attempts: the check warms the process
    # on a part of the corpus first, then gives each case four unjudged
    # replays before the three judged ones.
    files = case_files([bundled_corpus()])
    cases = [load_case(p) for p in files]
    with Oracle(resolve_target(target_name), ledgers=[MallinfoLedger()], warmups=4) as oracle:
        oracle.warm_up(cases[:20])
        settle_collector()
        found = [oracle.check(case).findings for case in cases]
    leaky = (FindingKind.LEAK, FindingKind.CYCLE)
    return [str(f.kind) for fs in found for f in fs if f.kind in leaky]


def test_pyopenssl_is_clean_under_a_process_wide_counter() -> None:
    assert _leaks("pyopenssl") == []


def test_a_planted_leak_shows_under_a_process_wide_counter() -> None:
    leaks = _leaks("control-leaky")
    assert len(leaks) > 200  # every rejected case loses an SSL_CTX and an SSL
    assert set(leaks) == {"leak"}


DEBIAN_PYTHON = "/usr/bin/python3"
PROBE = """
import sys
from tlsleak.cases.files import bundled_corpus, case_files, load_case
from tlsleak.check.oracle import Oracle, settle_collector
from tlsleak.targets import resolve_target
with Oracle(resolve_target(sys.argv[1]), ledgers=["openssl-heap"]) as oracle:
    settle_collector()
    found = [oracle.check(load_case(p)).findings for p in case_files([bundled_corpus()])]
print(sum(1 for fs in found for f in fs if f.kind in ("leak", "cycle")))
"""


def _system_binding_leaks(target_name: str) -> int:
    if not os.path.exists(DEBIAN_PYTHON) or subprocess.run(
        [DEBIAN_PYTHON, "-c", "import OpenSSL, cryptography"], capture_output=True, check=False
    ).returncode:
        pytest.skip("Debian's python3 with python3-openssl is not installed")
    env = preload_env(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")
    proc = subprocess.run(
        [DEBIAN_PYTHON, "-c", PROBE, target_name],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split()[-1])


def test_pyopenssl_on_the_system_libcrypto_has_no_false_heap_leaks() -> None:
    assert _system_binding_leaks("pyopenssl") == 0


def test_a_planted_leak_on_the_system_libcrypto_is_seen_by_the_heap_ledger() -> None:
    assert _system_binding_leaks("control-leaky") > 200


def test_sys_executable_is_not_debians() -> None:
    # The wheel's pyOpenSSL (statically linked OpenSSL) is what the in-process
    # tests above run on; the subprocess tests cover the system one.
    assert Path(sys.executable).resolve() != Path(DEBIAN_PYTHON).resolve()
