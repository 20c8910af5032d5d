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

from tlsleak.ledgers.shim import preload_env

# Run in a fresh interpreter, as the check worker runs a target: what other
# tests left behind in pytest's process would count too.
MALLINFO_PROBE = """
import ctypes, sys
from tlsleak.cases.files import bundled_corpus, case_files, load_case
from tlsleak.check.oracle import Oracle, settle_collector
from tlsleak.targets import resolve_target

FIELDS = ("arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost").split()

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS]

class MallinfoLedger:
    # Bytes in use in malloc's arenas, process-wide (glibc's mallinfo2).
    name = "mallinfo2"
    def __init__(self):
        self.mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
        self.mallinfo2.restype = MallInfo2
    def start(self): pass
    def stop(self): pass
    def snapshot(self):
        return {"malloc.bytes": int(self.mallinfo2().uordblks)}

# Python allocates from malloc too (objects over 512 bytes), and a fresh
# process fills caches over its first attempts: warm the process on a part
# of the corpus, give each grown case four unjudged replays, and call a case
# leaky only when checking it again after the whole corpus still says so.
cases = [load_case(p) for p in case_files([bundled_corpus()])]
with Oracle(resolve_target(sys.argv[1]), ledgers=[MallinfoLedger()], warmups=4) as oracle:
    oracle.warm_up(cases[:20])
    settle_collector()
    first = [oracle.check(case).findings for case in cases]
    grew = [i for i, fs in enumerate(first) if any(f.kind in ("leak", "cycle") for f in fs)]
    again = {i: oracle.check(cases[i]).findings for i in grew}
leaks = [(i, f) for i, fs in again.items() for f in fs if f.kind in ("leak", "cycle")]
for i, f in leaks:
    print(f.kind, i, dict(f.delta), file=sys.stderr)
print(" ".join(str(f.kind) for _i, f in leaks) or "-")
"""


def _leaks(target_name: str) -> list[str]:
    try:
        ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("glibc >= 2.33 (mallinfo2) is needed")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", MALLINFO_PROBE, target_name],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    kinds = [kind for kind in proc.stdout.split() if kind != "-"]
    if target_name == "pyopenssl":  # what grew, should the negative control fail
        assert not kinds, proc.stderr[-2000:]
    return kinds


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
