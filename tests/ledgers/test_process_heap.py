"""The ``heap`` ledger and its malloc interposer (tlsleak.ledgers.process_heap, interposer).

pytest's own process is not preloaded, so here the ledger must say it is
inactive (never count zero).  Everything that counts runs in a child started
with the interposer in LD_PRELOAD (:func:`preload_env`), which calls the C
allocator through ctypes: each function of the malloc family is counted and
balanced by its free, threads allocating at once keep the sum right, and
``fail_at`` fails exactly the k-th allocation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tlsleak.ledgers import (
    LEDGERS,
    LedgerUnavailable,
    ProcessHeapLedger,
    heap_available,
    make_ledger,
)
from tlsleak.ledgers.interposer import INTERPOSER_NAME, interposer, interposer_path
from tlsleak.ledgers.shim import preload_env, shim_path

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the interposer is built for Linux (LD_PRELOAD)"
)

#: Run first in every preloaded child: the C allocator through ctypes.
PRELUDE = """
import ctypes, errno, json, os, sys, threading
from tlsleak.ledgers.interposer import interposer
from tlsleak.ledgers import ProcessHeapLedger
h = interposer()
libc = ctypes.CDLL(None, use_errno=True)
vp, sz = ctypes.c_void_p, ctypes.c_size_t
for name, res, args in (
    ("malloc", vp, [sz]), ("calloc", vp, [sz, sz]), ("realloc", vp, [vp, sz]),
    ("reallocarray", vp, [vp, sz, sz]), ("free", None, [vp]), ("memalign", vp, [sz, sz]),
    ("aligned_alloc", vp, [sz, sz]), ("valloc", vp, [sz]), ("pvalloc", vp, [sz]),
    ("posix_memalign", ctypes.c_int, [ctypes.POINTER(vp), sz, sz]),
):
    fn = getattr(libc, name)
    fn.restype, fn.argtypes = res, args
def out(**kw):
    print(json.dumps(kw))
"""


def _child(code: str, *, preload: bool = True, env: dict[str, str] | None = None) -> Any:
    """Run ``code`` in a fresh interpreter; it reports with out(...) as its last line."""
    source = textwrap.dedent(code)
    if preload:
        source = PRELUDE + source
    child_env = preload_env(env) if preload else env
    proc = subprocess.run(
        [sys.executable, "-c", source],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- in this (not preloaded) process ----------------------------------------

needs_unloaded = pytest.mark.skipif(heap_available(), reason="pytest itself runs preloaded")


@needs_unloaded
def test_inactive_without_the_preload_instead_of_counting_zero() -> None:
    ledger = make_ledger("heap")
    assert isinstance(ledger, ProcessHeapLedger)
    with pytest.raises(LedgerUnavailable, match="not active") as info:
        ledger.start()
    message = str(info.value)
    assert "not loaded" in message
    assert f"LD_PRELOAD={interposer_path()}" in message
    with pytest.raises(RuntimeError, match="not started"):
        ledger.snapshot()
    assert not heap_available()


def test_loaded_late_is_refused_with_the_reason() -> None:
    # Loaded with ctypes after start, it is mapped but glibc's malloc is the
    # process's: the ledger must refuse, not count nothing.
    got = _child(
        f"""
        import ctypes, json, os
        ctypes.CDLL({str(interposer_path())!r}, mode=os.RTLD_NOW)
        from tlsleak.ledgers import LedgerUnavailable, ProcessHeapLedger
        try:
            ProcessHeapLedger().start()
            print(json.dumps("counted"))
        except LedgerUnavailable as exc:
            print(json.dumps(str(exc)))
        """,
        preload=False,
    )
    assert "loaded but is not the process's malloc" in got
    assert "LD_PRELOAD=" in got


def test_registered_and_preloaded_with_the_shim() -> None:
    assert LEDGERS["heap"] is ProcessHeapLedger
    assert interposer_path().name == INTERPOSER_NAME
    env = preload_env({"LD_PRELOAD": "/x/a.so", "KEEP": "1"})
    assert env["LD_PRELOAD"] == f"{interposer_path()} {shim_path()} /x/a.so"
    assert env["KEEP"] == "1"


def test_scope_option_and_variable() -> None:
    assert ProcessHeapLedger().heap_scope == "process"
    assert ProcessHeapLedger("thread").heap_scope == "thread"
    with pytest.raises(ValueError, match="scope must be one of process, thread"):
        ProcessHeapLedger("threads")
    got = _child(
        "out(scope=ProcessHeapLedger().heap_scope)",
        env={**os.environ, "TLSLEAK_HEAP_SCOPE": "thread"},
    )
    assert got == {"scope": "thread"}


# -- in preloaded children ---------------------------------------------------


def test_every_allocator_is_counted_and_balanced_by_free() -> None:
    got = _child(
        """
        led = ProcessHeapLedger(); led.start()
        def grew(make):
            before = led.snapshot()
            p = make()
            mid = led.snapshot()
            libc.free(p)
            after = led.snapshot()
            return [mid["heap.blocks"] - before["heap.blocks"],
                    mid["heap.bytes"] - before["heap.bytes"],
                    after["heap.blocks"] - before["heap.blocks"],
                    after["heap.bytes"] - before["heap.bytes"]]
        def posix():
            p = vp()
            assert libc.posix_memalign(ctypes.byref(p), 64, 1000) == 0
            return p.value
        res = {
            "malloc": grew(lambda: libc.malloc(1000)),
            "calloc": grew(lambda: libc.calloc(10, 100)),
            "realloc-null": grew(lambda: libc.realloc(None, 1000)),
            "reallocarray-null": grew(lambda: libc.reallocarray(None, 10, 100)),
            "memalign": grew(lambda: libc.memalign(64, 1000)),
            "aligned_alloc": grew(lambda: libc.aligned_alloc(64, 1024)),
            "valloc": grew(lambda: libc.valloc(1000)),
            "pvalloc": grew(lambda: libc.pvalloc(1000)),
            "posix_memalign": grew(posix),
        }
        # realloc that grows: same block count, more bytes; to 0: freed.
        before = led.snapshot()
        p = libc.malloc(100)
        p = libc.realloc(p, 5000)
        moved = led.snapshot()
        q = libc.realloc(p, 0)
        res["realloc"] = [moved["heap.blocks"] - before["heap.blocks"],
                          moved["heap.bytes"] - before["heap.bytes"],
                          led.snapshot()["heap.blocks"] - before["heap.blocks"], q]
        out(**res)
        """
    )
    for name in (
        "malloc",
        "calloc",
        "realloc-null",
        "reallocarray-null",
        "memalign",
        "aligned_alloc",
        "valloc",
        "pvalloc",
        "posix_memalign",
    ):
        blocks, size, blocks_after, size_after = got[name]
        assert blocks == 1, name
        assert size >= 1000, name  # the usable size: at least what was asked
        assert (blocks_after, size_after) == (0, 0), name
    blocks, size, blocks_after, freed = got["realloc"]
    assert blocks == 1
    assert size >= 5000
    assert blocks_after == 0
    assert freed is None


def test_threads_allocating_at_once_keep_the_process_sum() -> None:
    # Eight threads make and free blocks (half of them on another thread
    # than the one that made them) while the main thread reads the counts.
    got = _child(
        """
        import queue, ssl
        led = ProcessHeapLedger(); led.start()
        def settle():
            import time
            deadline = time.monotonic() + 10
            while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < deadline:
                time.sleep(0.001)
        def work():
            for i in range(3000):
                p = libc.malloc(600 + i % 700)
                if i % 2:
                    handoff.put(p)
                else:
                    libc.free(p)
        def drain():
            for _ in range(4 * 1500):
                libc.free(handoff.get())
        for _ in range(3):  # one-time allocations of threads and queues
            t = threading.Thread(target=lambda: None); t.start(); t.join()
        settle()
        before = led.snapshot()
        handoff = queue.Queue()
        threads = [threading.Thread(target=work) for _ in range(4)]
        threads.append(threading.Thread(target=drain))
        reads = 0
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            led.snapshot(); reads += 1
        for t in threads:
            t.join()
        del threads, t, handoff  # their Python objects are malloc blocks too
        import gc; gc.collect()
        settle()
        after = led.snapshot()
        out(blocks=after["heap.blocks"] - before["heap.blocks"], reads=reads)
        """
    )
    assert got["reads"] > 0
    # Thread stacks and thread states are made and freed by libc and Python
    # around the threads; the 12,000 blocks the threads made are all gone.
    assert abs(got["blocks"]) <= 8


def test_more_threads_than_slots_share_one_and_slots_are_recycled() -> None:
    # 300 threads alive at once: past the 256 slots, the rest count in the
    # shared atomic slot; when they exit, their slots fold into it.  Twice,
    # so the second wave runs on recycled slots.
    got = _child(
        """
        import time
        led = ProcessHeapLedger(); led.start()
        def settle():
            deadline = time.monotonic() + 20
            while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < deadline:
                time.sleep(0.001)
        def wave():
            ready = threading.Barrier(300)
            def work():
                ready.wait()
                kept = [libc.malloc(700) for _ in range(50)]
                for p in kept:
                    libc.free(p)
                kept.append(libc.malloc(900))  # freed by the main thread
                held.append(kept[-1])
            held = []
            threads = [threading.Thread(target=work) for _ in range(300)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            del threads, t
            settle()
            return held
        wave()  # one-time allocations of 300 threads
        import gc; gc.collect()
        before = led.snapshot()["heap.blocks"]
        held = wave()
        during = led.snapshot()["heap.blocks"]
        for p in held:
            libc.free(p)
        n = len(held)
        del held
        gc.collect()
        after = led.snapshot()["heap.blocks"]
        out(n=n, during=during - before, after=after - before)
        """
    )
    assert got["n"] == 300
    assert 300 <= got["during"] <= 300 + 20  # the held blocks, plus Python's list
    assert abs(got["after"]) <= 20


def test_thread_scope_sees_a_block_freed_by_another_thread_as_kept() -> None:
    # Why process scope is the default: blocks made here and freed by a
    # worker thread leave this thread's slot up by as many.
    got = _child(
        """
        thread = ProcessHeapLedger("thread"); thread.start()
        proc = ProcessHeapLedger("process"); proc.start()
        t = threading.Thread(target=lambda: None); t.start(); t.join()
        tb, pb = thread.snapshot(), proc.snapshot()
        blocks = [libc.malloc(4000) for _ in range(100)]
        def free_all():
            for p in blocks:
                libc.free(p)
        t = threading.Thread(target=free_all); t.start(); t.join()
        ta, pa = thread.snapshot(), proc.snapshot()
        out(thread=ta["heap.blocks"] - tb["heap.blocks"],
            process=pa["heap.blocks"] - pb["heap.blocks"])
        """
    )
    # Python's own objects for the thread (a few blocks) come on top.
    assert 100 <= got["thread"] <= 110
    assert abs(got["process"]) <= 10


def test_fail_at_fails_the_kth_allocation_once_and_zero_disarms() -> None:
    got = _child(
        """
        led = ProcessHeapLedger(); led.start()
        failed0 = led.failed()
        led.fail_at(3)
        blocks = [libc.malloc(1000) for _ in range(5)]
        err = ctypes.get_errno()
        led.fail_at(0)
        after = [libc.malloc(1000) for _ in range(5)]
        led.fail_at(2)
        led.fail_at(0)  # disarmed before it fired
        disarmed = [libc.malloc(1000) for _ in range(3)]
        led.fail_at(1)
        grown = libc.realloc(after[0], 100000)  # a growing realloc is an allocation
        led.fail_at(0)
        led.reset_allocations()
        for p in [*blocks, *after, *disarmed]:
            libc.free(p)
        libc.free(libc.malloc(50)); libc.free(libc.calloc(2, 50))
        out(blocks=[bool(p) for p in blocks], errno=err, after=[bool(p) for p in after],
            disarmed=[bool(p) for p in disarmed], grown=grown, failed=led.failed() - failed0,
            counted=led.allocations())
        """
    )
    assert got["blocks"] == [True, True, False, True, True]
    assert got["errno"] == 12  # ENOMEM
    assert all(got["after"])
    assert all(got["disarmed"])
    assert got["grown"] is None
    assert got["failed"] == 2
    # Frees are no allocations; ctypes' own Python objects stay in pymalloc.
    assert got["counted"] == 2


def test_the_process_heap_sees_python_ssl_and_the_wheels_openssl() -> None:
    # The system libcrypto (ssl) and cryptography's own OpenSSL (pyOpenSSL)
    # both allocate through the process's malloc.
    got = _child(
        """
        import ssl
        from OpenSSL import SSL
        led = ProcessHeapLedger(); led.start()
        def held(make):
            for _ in range(3):
                make()
            before = led.snapshot()["heap.blocks"]
            kept = [make() for _ in range(5)]
            grown = led.snapshot()["heap.blocks"] - before
            kept.clear()
            return grown, led.snapshot()["heap.blocks"] - before
        out(ssl=held(lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)),
            pyopenssl=held(lambda: SSL.Context(SSL.TLS_METHOD)))
        """
    )
    for name in ("ssl", "pyopenssl"):
        kept, released = got[name]
        assert kept >= 5 * 10, name  # an SSL_CTX is dozens of blocks
        assert abs(released) <= 2, name


def test_interposer_object_in_this_process_says_why() -> None:
    if heap_available():
        pytest.skip("pytest itself runs preloaded")
    with pytest.raises(LedgerUnavailable, match="not loaded"):
        interposer()
