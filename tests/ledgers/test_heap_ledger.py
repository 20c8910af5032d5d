"""The OpenSSL heap ledger (tlsleak.ledgers.shim and its shim), on the stdlib ssl module.

pytest's own process is not preloaded, so here the ledger must say it is
inactive (never count zero).  Everything that counts runs in a child started
with the shim in LD_PRELOAD, driving the standard library's ``ssl`` (which
uses the system libcrypto the shim hooks).  Each detector has a positive and
a negative control.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tlsleak.ledgers import LEDGERS, HeapLedger, LedgerUnavailable, make_ledger
from tlsleak.ledgers.interposer import interposer_path
from tlsleak.ledgers.shim import SHIM_NAME, heap, is_preloaded, preload_env, shim_path

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the heap shim is built for Linux (LD_PRELOAD)"
)

#: Run first in every preloaded child: the ledger, and warm-up so one-time
#: OpenSSL caches (providers, method tables, error strings) are filled.
PRELUDE = """
import gc, json, ssl, sys, threading
from tlsleak.ledgers.shim import heap
from tlsleak.ledgers import HeapLedger
h = heap()
def ctx():
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
for _ in range(5):
    ctx()
def out(**kw):
    print(json.dumps(kw))
def settle():
    # Thread.join() returns before the OS thread has run its thread-exit
    # handlers, where OpenSSL frees its per-thread state (DRBGs, error
    # queue): wait until the kernel has only the main thread left.
    import os, time
    deadline = time.monotonic() + 10
    while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < deadline:
        time.sleep(0.001)
"""


def _child(code: str, *, preload: bool = True) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it reports with out(...) as its last line."""
    source = textwrap.dedent(code)
    if preload:
        source = PRELUDE + source
    env = preload_env() if preload else None
    proc = subprocess.run(
        [sys.executable, "-c", source],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- in this (not preloaded) process ----------------------------------------

needs_unloaded = pytest.mark.skipif(is_preloaded(), reason="pytest itself runs preloaded")


@needs_unloaded
def test_heap_says_inactive_instead_of_counting_zero() -> None:
    with pytest.raises(LedgerUnavailable, match="not active") as info:
        heap()
    message = str(info.value)
    assert "not loaded" in message
    assert f"LD_PRELOAD={shim_path()}" in message
    assert not is_preloaded()


@needs_unloaded
def test_ledger_start_raises_when_inactive() -> None:
    ledger = make_ledger("openssl-heap")
    assert isinstance(ledger, HeapLedger)
    with pytest.raises(LedgerUnavailable, match="not active"):
        ledger.start()
    with pytest.raises(RuntimeError, match="not started"):
        ledger.snapshot()


def test_ledger_is_registered() -> None:
    assert LEDGERS["openssl-heap"] is HeapLedger


def test_shim_is_built() -> None:
    path = shim_path()
    assert path.name == SHIM_NAME
    assert path.is_file()


def test_preload_env_prepends_the_shim_once() -> None:
    path = str(shim_path())
    malloc = str(interposer_path())  # the heap ledger's interposer comes first
    env = preload_env({"LD_PRELOAD": f"/x/a.so:{path} /x/b.so", "KEEP": "1"})
    assert env["LD_PRELOAD"] == f"{malloc} {path} /x/a.so /x/b.so"
    assert env["KEEP"] == "1"
    assert preload_env({})["LD_PRELOAD"] == f"{malloc} {path}"
    source = {"LD_PRELOAD": "/x/a.so"}
    preload_env(source)
    assert source == {"LD_PRELOAD": "/x/a.so"}  # a copy, not the caller's mapping


# -- in preloaded children, on the stdlib ssl module -------------------------


def test_child_is_preloaded_and_counts() -> None:
    got = _child(
        """
        from tlsleak.ledgers.shim import is_preloaded
        led = HeapLedger()
        led.start()
        out(preloaded=is_preloaded(), installed=h.installed(), libcrypto=h.libcrypto(),
            snapshot=dict(led.snapshot()), foreign=h.foreign())
        """
    )
    assert got["preloaded"] is True
    assert got["installed"] is True
    assert "libcrypto" in got["libcrypto"]
    assert set(got["snapshot"]) == {"openssl-heap.blocks", "openssl-heap.bytes"}
    assert got["snapshot"]["openssl-heap.blocks"] > 0  # ssl and hashlib were imported
    assert got["foreign"] == 0


def test_dropped_contexts_net_zero_kept_contexts_grow() -> None:
    got = _child(
        """
        led = HeapLedger()
        led.start()
        def delta(keep):
            before = led.snapshot()
            c = ctx()
            if keep is not None:
                keep.append(c)
            del c
            after = led.snapshot()
            return [after[k] - before[k] for k in ("openssl-heap.blocks", "openssl-heap.bytes")]
        dropped = [delta(None) for _ in range(50)]
        kept_list = []
        kept = [delta(kept_list) for _ in range(20)]
        out(dropped=dropped, kept=kept)
        """
    )
    # Negative control: each created-and-dropped context gives all back.
    assert sum(b for b, _ in got["dropped"]) == 0
    assert sum(n for _, n in got["dropped"]) == 0
    # Positive control: each kept one grows blocks and bytes, every time.
    for blocks, size in got["kept"]:
        assert blocks >= 50
        assert size >= 1000


def test_attribution_names_ssl_lib_for_a_kept_context() -> None:
    got = _child(
        """
        led = HeapLedger()
        led.start()
        mark = led.begin_attribution()
        kept = ctx()
        sites = led.end_attribution(mark)
        mark = led.begin_attribution()
        dropped = ctx()
        del dropped
        none_left = led.end_attribution(mark)
        # attribution is off again: a context made now is not attributed
        later = ctx()
        after_end = h.sites_since(mark)
        out(sites=[[s.file, s.line, s.blocks, s.bytes] for s in sites],
            none_left=len(none_left), after_end=len(after_end),
            blocks=sum(s.blocks for s in sites))
        """
    )
    files = {file for file, _line, _blocks, _size in got["sites"]}
    assert any(f.endswith("ssl/ssl_lib.c") for f in files), files
    assert all(line > 0 and blocks > 0 and size > 0 for _f, line, blocks, size in got["sites"])
    assert got["blocks"] >= 50
    assert got["none_left"] == 0  # negative control: nothing of a dropped context is live
    assert got["after_end"] == 0


def test_fail_at_makes_context_creation_fail() -> None:
    got = _child(
        """
        h.reset_allocations()
        ctx()
        per_context = h.allocations()
        h.reset_allocations()
        ctx()
        again = h.allocations()
        raised = []
        for k in (1, 2, 3):
            before = h.failed()
            h.fail_at(k)
            try:
                ctx()
                name = None
            except (MemoryError, ssl.SSLError) as exc:
                name = type(exc).__name__
            raised.append([k, name, h.failed() - before])
        # past the last allocation of one init: nothing fails, and it stays armed
        h.fail_at(per_context + 1)
        before = h.failed()
        ctx()
        beyond = h.failed() - before
        h.fail_at(0)
        ctx()
        ctx()
        disarmed = h.failed() - before
        out(per_context=per_context, again=again, raised=raised, beyond=beyond,
            disarmed=disarmed, total=h.failed())
        """
    )
    assert got["per_context"] > 100
    assert got["again"] == got["per_context"]  # deterministic: what a sweep over k needs
    for k, name, failed in got["raised"]:
        assert name in ("MemoryError", "SSLError"), k
        assert failed == 1, k  # one-shot: exactly one failure per arming
    assert got["beyond"] == 0
    assert got["disarmed"] == 0
    assert got["total"] == 3


def test_counts_are_right_across_threads() -> None:
    got = _child(
        """
        led = HeapLedger()
        led.start()
        def churn():
            for _ in range(100):
                ctx()
        # warm-up: one unmeasured round (OpenSSL grows a few shared tables
        # once, the first time several threads use it at once)
        warmers = [threading.Thread(target=churn) for _ in range(4)]
        for t in warmers: t.start()
        for t in warmers: t.join()
        settle()
        before = led.snapshot()
        h.reset_allocations()
        threads = [threading.Thread(target=churn) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        settle()
        churned = led.snapshot()
        allocations = h.allocations()
        # positive control: 300 short-lived threads (more than the shim's 256
        # slots, so slots must be recycled) each keep one context
        one_before = led.snapshot()
        one = ctx()
        one_after = led.snapshot()
        per = one_after["openssl-heap.blocks"] - one_before["openssl-heap.blocks"]
        kept = []
        def keep():
            kept.append(ctx())
        base = led.snapshot()
        for i in range(0, 300, 4):
            batch = [threading.Thread(target=keep) for _ in range(4)]
            for t in batch: t.start()
            for t in batch: t.join()
        settle()
        grown = led.snapshot()
        n = len(kept)
        del kept[:]
        released = led.snapshot()
        out(allocations=allocations,
            churn=churned["openssl-heap.blocks"] - before["openssl-heap.blocks"],
            churn_bytes=churned["openssl-heap.bytes"] - before["openssl-heap.bytes"],
            per=per, n=n, grown=grown["openssl-heap.blocks"] - base["openssl-heap.blocks"],
            released=released["openssl-heap.blocks"] - base["openssl-heap.blocks"],
            released_bytes=released["openssl-heap.bytes"] - base["openssl-heap.bytes"])
        """
    )
    assert got["allocations"] > 400 * 100  # 400 inits on 4 threads at once
    assert got["churn"] == 0
    assert got["churn_bytes"] == 0
    assert got["n"] == 300
    assert got["per"] >= 50
    assert got["grown"] == got["n"] * got["per"]
    assert got["released"] == 0
    assert got["released_bytes"] == 0


def test_shim_loaded_after_openssl_allocated_reports_failure() -> None:
    got = _child(
        """
        import ctypes, json, ssl
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # OpenSSL has allocated now
        from tlsleak.ledgers import LedgerUnavailable
        from tlsleak.ledgers.shim import heap, is_preloaded, shim_path
        lib = ctypes.CDLL(str(shim_path()))
        try:
            heap()
            message = None
        except LedgerUnavailable as exc:
            message = str(exc)
        print(json.dumps({"installed": lib.tlsleak_heap_installed(),
                          "preloaded": is_preloaded(), "message": message}))
        """,
        preload=False,
    )
    assert got["installed"] == 0
    assert got["preloaded"] is False
    assert got["message"] is not None
    assert "not active" in got["message"]
    assert "installation failed" in got["message"]
    assert "LD_PRELOAD=" in got["message"]


def test_ledger_serves_the_oracle_protocols() -> None:
    from tlsleak.check.oracle import AttributingLedger, FaultInjector

    ledger = HeapLedger()
    assert isinstance(ledger, AttributingLedger)
    assert isinstance(ledger, FaultInjector)


def test_ledger_injects_through_the_oracle_interface() -> None:
    got = _child(
        """
        led = HeapLedger()
        led.start()
        led.reset_allocations()
        ctx()
        n = led.allocations()
        led.fail_at(1)
        try:
            ctx()
            raised = None
        except (MemoryError, ssl.SSLError) as exc:
            raised = type(exc).__name__
        out(n=n, raised=raised, failed=led.failed())
        """
    )
    assert got["n"] > 100
    assert got["raised"] in ("MemoryError", "SSLError")
    assert got["failed"] == 1


# -- what the ledger sees: tried with one allocation ------------------------------


def test_the_heap_ledger_counts_an_allocation_on_the_system_libcrypto_only() -> None:
    got = _child(
        """
        import ctypes
        from cryptography.hazmat.bindings.openssl.binding import Binding
        from tlsleak.ledgers import counts_allocation
        from tlsleak.openssl.errors import SYSTEM_LIBCRYPTO
        system = ctypes.CDLL(SYSTEM_LIBCRYPTO)
        system.BIO_s_mem.restype = ctypes.c_void_p
        system.BIO_new.restype = ctypes.c_void_p
        system.BIO_new.argtypes = [ctypes.c_void_p]
        system.BIO_free.argtypes = [ctypes.c_void_p]
        def system_bio():
            bio = system.BIO_new(system.BIO_s_mem())
            return lambda: system.BIO_free(bio)
        def binding_bio():
            bio = Binding.lib.BIO_new(Binding.lib.BIO_s_mem())
            return lambda: Binding.lib.BIO_free(bio)
        ledger = HeapLedger()
        ledger.start()
        own = Binding.ffi.string(Binding.lib.OpenSSL_version(0)).decode()
        out(system=counts_allocation(ledger, system_bio),
            binding=counts_allocation(ledger, binding_bio),
            wheel=own != ssl.OPENSSL_VERSION, scope=ledger.scope, live=h.counts()[0])
        """
    )
    assert got["system"] is True  # positive control: the hooked libcrypto
    if got["wheel"]:
        assert got["binding"] is False  # negative control: the wheel's own OpenSSL
    assert got["scope"].startswith("the heap of the system libcrypto (/")
    assert HeapLedger.stack_bound is True
