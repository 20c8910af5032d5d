"""Roots inside Python extension modules: code under test, named even when stripped.

A leak lost by a static function of an extension module (a Cython module
exports only ``PyInit_``) must get a root of its own: the function's name
from the symbol table, or when stripped its start from the unwind tables
(``fake.cpython-311-x86_64-linux-gnu.so(fn@0x1139)``).  Positive control: a
fake extension with two static functions that each lose a block gives two
roots, built with symbols and stripped, the same wherever it is loaded and
from any working directory; an allocation wrapper is looked past.  Negative
control: the interpreter's own extension modules (lib-dynload) and the TLS
binding's stay runtime, and an odd ELF file gives no name, never an error.
"""

from __future__ import annotations

import _ssl
import ctypes
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from tlsleak.cases.case import InitCase, Mode, decode
from tlsleak.cases.files import load_case
from tlsleak.check.verdict import Finding, FindingKind
from tlsleak.cli import main
from tlsleak.ledgers import _elf, symbols
from tlsleak.ledgers.interposer import RawStack
from tlsleak.ledgers.shim import preload_env
from tlsleak.targets import Outcome, Status

NAME = "fake.cpython-311-x86_64-linux-gnu.so"
CORPUS = Path(__file__).parents[2] / "corpus"
#: Bundled cases, one of each mode: the fake target loses a block in each,
#: in another function per mode.
SERVER_CASE = CORPUS / "00522e1f08af6b9b984b969141723ef18e39ca8c"
CASES = [f for f in sorted(CORPUS.iterdir()) if f.is_file()]

#: An extension-like object: two static functions (no dynamic symbol, as a
#: Cython module's) that each keep a block per call through a tiny
#: allocation wrapper, and exported getters of their addresses (ctypes
#: calls them by pointer, as the interpreter calls a module's methods).
SOURCE = r"""
#include <stdlib.h>
#include <string.h>

static void *volatile last_config, *volatile last_session;

__attribute__((noinline)) static void *xalloc(size_t n) { return malloc(n); }

__attribute__((noinline)) static void lose_config(int n)
{
    char *p = xalloc(32 + (size_t)(n % 7));
    if (p == NULL)
        return;
    for (int i = 0; i < 16; i++)
        p[i] = (char)(i * n + 3);
    memcpy(p + 16, "config-settings", 16);
    last_config = p; /* the previous one is lost */
}

__attribute__((noinline)) static void lose_session(int n)
{
    char *p = xalloc(48 + (size_t)(n % 5));
    if (p == NULL)
        return;
    for (int i = 0; i < 24; i++)
        p[i] = (char)(i ^ n);
    memcpy(p + 24, "session-tickets", 16);
    last_session = p;
}

void *config_entry(void) { return (void *)lose_config; }
void *session_entry(void) { return (void *)lose_session; }
void *wrapper_entry(void) { return (void *)xalloc; }
"""

#: A user target calling the fake extension: servers lose a config, clients a session.
TARGET = """
import ctypes, os
from tlsleak.cases.case import Mode

_lib = ctypes.CDLL(os.environ["TLSLEAK_TEST_FAKE_EXT"])
_FN = ctypes.CFUNCTYPE(None, ctypes.c_int)
_lib.config_entry.restype = _lib.session_entry.restype = ctypes.c_void_p
_config = _FN(_lib.config_entry())
_session = _FN(_lib.session_entry())

def init(case):
    size = len(case.key or b"") + len(case.cert or b"")
    (_config if case.mode is Mode.SERVER else _session)(size)
"""


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fake extension with symbols and stripped, each in its own folder."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed, so the fake extension can't be built")
    folder = tmp_path_factory.mktemp("fake-ext")
    source = folder / "fake.c"
    source.write_text(SOURCE)
    found = {}
    for kind, flags in (("symbols", []), ("stripped", ["-s"])):
        (folder / kind).mkdir()
        out = folder / kind / NAME
        command = [gcc, "-shared", "-fPIC", "-O0", *flags, "-o", str(out), str(source)]
        subprocess.run(command, check=True, capture_output=True)
        found[kind] = out
    return found


def _addresses(lib: Path) -> dict[str, int]:
    """Return-address-like addresses inside each function of ``lib`` as loaded here."""
    loaded = ctypes.CDLL(str(lib))
    found = {}
    for name in ("config", "session", "wrapper"):
        getter = getattr(loaded, f"{name}_entry")
        getter.restype = ctypes.c_void_p
        found[name] = int(getter()) + 5
    return found


def _root(lib: Path, function: str) -> symbols.LostStack:
    """The symbolised stack of a block allocated by the wrapper for ``function``."""
    at = _addresses(lib)
    (stack,) = symbols.symbolise([RawStack(1, 32, 1, (at["wrapper"], at[function]))])
    return stack


# -- naming --------------------------------------------------------------------------


def test_an_extension_outside_the_stdlib_is_code_under_test(builds: dict[str, Path]) -> None:
    assert not symbols.is_runtime(str(builds["symbols"]))
    site = sysconfig.get_paths()["purelib"]
    assert not symbols.is_runtime(f"{site}/grpc/_cython/cygrpc.cpython-311-x86_64-linux-gnu.so")
    assert not symbols.is_runtime(f"{site}/mbedtls/x509.cpython-311-x86_64-linux-gnu.so")


def test_two_static_functions_get_two_roots_with_symbols(builds: dict[str, Path]) -> None:
    config, session = _root(builds["symbols"], "config"), _root(builds["symbols"], "session")
    assert config.root == f"{NAME}(lose_config)"
    assert session.root == f"{NAME}(lose_session)"
    assert config.root_build is None  # a name from the symbol table holds across builds


def test_two_static_functions_get_two_roots_when_stripped(builds: dict[str, Path]) -> None:
    config, session = _root(builds["stripped"], "config"), _root(builds["stripped"], "session")
    assert config.root is not None
    assert session.root is not None
    assert config.root.startswith(f"{NAME}(fn@0x")
    assert config.root != session.root
    table = _elf.function_table(str(builds["stripped"]))
    assert table is not None
    assert not table.functions
    assert config.root_build == table.build
    # The wrapper (malloc and nothing else) is looked past, not the root.
    wrapper = config.frames[0]
    assert config.root != f"{NAME}({wrapper.own_name})"


def test_roots_do_not_move_with_the_load_address_or_the_directory(
    builds: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for kind in ("symbols", "stripped"):
        copy = tmp_path / f"again-{kind}" / NAME  # another path: loaded at another address
        copy.parent.mkdir()
        shutil.copy(builds[kind], copy)
        first, second = _root(builds[kind], "config"), _root(copy, "config")
        assert first.frames[0].address != second.frames[0].address
        monkeypatch.chdir(tmp_path)
        symbols._named.clear()
        third = _root(copy, "config")
        assert first.root == second.root == third.root


def test_the_interpreters_and_the_bindings_extensions_stay_runtime(tmp_path: Path) -> None:
    assert _ssl.__file__ is not None
    assert symbols.is_runtime(_ssl.__file__)  # lib-dynload: the ssl target's binding
    rust = pytest.importorskip("cryptography.hazmat.bindings._rust")
    assert symbols.is_runtime(str(rust.__file__))
    cffi_backend = pytest.importorskip("_cffi_backend")
    assert symbols.is_runtime(str(cffi_backend.__file__))
    # Outside sys.path, the binding is told by its folder's name.
    assert symbols.is_runtime(str(tmp_path / "cryptography" / "hazmat" / NAME))
    # A stack whose only code is the runtime's has no root.
    ssl_frame = symbols.Frame(1, _ssl.__file__, None, 0x40, start=0x10, size=200, build="x")
    assert symbols.LostStack(1, 8, 1, (ssl_frame,)).root is None


# -- the ELF reader never raises -----------------------------------------------------


def test_an_odd_file_has_no_function_table(builds: dict[str, Path], tmp_path: Path) -> None:
    good = builds["stripped"].read_bytes()
    odd = {
        "empty": b"",
        "text": b"not an ELF file at all\n" * 10,
        "truncated": good[:80],
        "headers only": good[:1024],
    }
    # The .eh_frame_hdr's version byte, then its table encoding, made unknown.
    table = _elf.function_table(str(builds["stripped"]))
    assert table is not None
    assert table.starts
    hdr = _eh_frame_hdr_offset(good)
    for at, name in ((hdr, "bad version"), (hdr + 3, "bad encoding")):
        data = bytearray(good)
        data[at] = 0x7F
        odd[name] = bytes(data)
    for name, data in odd.items():
        path = tmp_path / f"{name.replace(' ', '-')}.so"
        path.write_bytes(data)
        assert _elf.function_table(str(path)) is None, name
    assert _elf.function_table(str(tmp_path / "missing.so")) is None


def test_random_damage_never_raises(builds: dict[str, Path], tmp_path: Path) -> None:
    import random

    good = builds["stripped"].read_bytes()
    chance = random.Random(1)
    for i in range(150):
        data = bytearray(good[: 4096 if i % 2 else len(good)])
        for _ in range(8):
            data[chance.randrange(len(data))] = chance.randrange(256)
        path = tmp_path / f"damaged-{i}.so"
        path.write_bytes(bytes(data))
        table = _elf.function_table(str(path))  # None or a table: no exception
        if table is not None:
            table.enclosing(0x1000)
            table.symbol(0x1000)


def _eh_frame_hdr_offset(data: bytes) -> int:
    """File offset of the PT_GNU_EH_FRAME segment (64-bit little-endian ELF)."""
    phoff = int.from_bytes(data[32:40], "little")
    size, count = int.from_bytes(data[54:56], "little"), int.from_bytes(data[56:58], "little")
    for i in range(count):
        at = phoff + i * size
        if int.from_bytes(data[at : at + 4], "little") == 0x6474E550:
            return int.from_bytes(data[at + 8 : at + 16], "little")
    raise AssertionError("no PT_GNU_EH_FRAME")


# -- end to end: two functions, two findings ----------------------------------------


def _check(lib: Path, cases: list[Path], report: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("TLSLEAK_TEST_FAKE_EXT", str(lib))
    assert main(["check", "fake_ext_target:init", *map(str, cases), "--json", str(report)]) == 1
    return json.loads(report.read_text())["findings"]


@pytest.mark.parametrize("kind", ["symbols", "stripped"])
def test_each_leaking_function_is_its_own_finding(
    kind: str,
    builds: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "fake_ext_target.py").write_text(TARGET)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    monkeypatch.syspath_prepend(str(tmp_path))
    clients = [f for f in CASES if load_case(f).mode is Mode.CLIENT][:2]
    servers = [SERVER_CASE, CORPUS / "0bceeeea15973ffd6ec3bd47d51c573610dd3803"]
    found = _check(builds[kind], [*servers, *clients], tmp_path / "a.json", monkeypatch)
    by_mode: dict[Mode, set[str]] = {}
    for finding in found:
        mode = decode(bytes.fromhex(finding["case_hex"])).mode
        by_mode.setdefault(mode, set()).add(finding["signature"])
    capsys.readouterr()
    # Different inputs of one mode: one signature; the two functions: two.
    assert len(by_mode[Mode.SERVER]) == len(by_mode[Mode.CLIENT]) == 1
    (server,), (client,) = by_mode[Mode.SERVER], by_mode[Mode.CLIENT]
    assert server != client
    if kind == "symbols":
        assert server.endswith(f"{NAME}(lose_config)")
        assert client.endswith(f"{NAME}(lose_session)")
    else:
        assert f"{NAME}(fn@0x" in server
        assert f"{NAME}(fn@0x" in client
    # Run again (another worker, other load addresses): the same signatures.
    again = _check(builds[kind], [servers[0], clients[0]], tmp_path / "b.json", monkeypatch)
    assert {f["signature"] for f in again} == {server, client}


# -- replay: a stripped root of another build ---------------------------------------


def _leak(root: str | None, build: str | None) -> Finding:
    outcome = Outcome(Status.REJECTED, "key", (), "bad key")
    return Finding(
        FindingKind.LEAK,
        "grpc",
        InitCase(),
        outcome,
        delta={"heap.blocks": 3},
        root_site=root,
        root_build=build,
    )


def test_a_stripped_root_of_another_build_cannot_be_matched_or_dismissed() -> None:
    stored = _leak(f"{NAME}(fn@0x1139)", "aa11")
    assert Finding.from_json(stored.to_json()) == stored
    # Same build: the same start is the same bug, another start another one.
    assert _leak(f"{NAME}(fn@0x1139)", "aa11").reproduces(stored)
    assert not _leak(f"{NAME}(fn@0x1200)", "aa11").reproduces(stored)
    assert not _leak(f"{NAME}(fn@0x1200)", "aa11").other_build(stored)
    # Another build: "cannot reproduce exactly", whatever the start now.
    assert _leak(f"{NAME}(fn@0x1200)", "bb22").other_build(stored)
    assert _leak(f"{NAME}(lose_config)", None).other_build(stored)
    # Another leak (other counters) is not this one in another build.
    other = replace_delta(_leak(f"{NAME}(fn@0x1200)", "bb22"), {"fds": 1})
    assert not other.other_build(stored)
    # A root from a symbol table holds across builds: no build kept.
    named = _leak(f"{NAME}(lose_config)", None)
    assert "root_build" not in named.to_json()
    assert not _leak(f"{NAME}(lose_config)", None).other_build(named)


def replace_delta(finding: Finding, delta: dict[str, int]) -> Finding:
    from dataclasses import replace

    return replace(finding, delta=delta)


# -- which lost stack names the leak -------------------------------------------------

EXT = f"/tmp/somewhere/{NAME}"
PYTHON = symbols.Frame(9, "/usr/lib/libpython3.11.so.1.0", "PyObject_Vectorcall", 0x33)


def _in(start: int, size: int = 400) -> symbols.Frame:
    return symbols.Frame(start + 8, EXT, None, start + 8, start=start, size=size, build="b1")


def _lost(first: int, blocks: int, *frames: symbols.Frame) -> symbols.LostStack:
    return symbols.LostStack(blocks, 32 * blocks, first, frames)


def test_the_entry_point_that_lost_most_names_the_leak() -> None:
    credentials = _lost(1, 2, _in(0x100), _in(0x900), PYTHON)  # one block a run
    server = [_lost(5 + i, 2, _in(0x200 + 0x10 * i), _in(0xA00), PYTHON) for i in range(3)]
    root = symbols.root_stack([credentials, *server], attempts=2)
    assert root is server[0]  # the server's entry lost 3 a run, the credentials' 1
    assert root.root == f"{NAME}(fn@0x200)"
    # Alone (an accepted server: only the credentials lose), the credentials.
    assert symbols.root_stack([credentials], attempts=2) is credentials
    # A tie: the earliest.
    assert symbols.root_stack([credentials, server[0]], attempts=2) is credentials


def test_what_only_the_last_run_lost_does_not_count() -> None:
    leak = _lost(1, 2, _in(0x100), _in(0x900), PYTHON)
    # Blocks a thread of the last run frees later: one each, several of them.
    pending = [_lost(10 + i, 1, _in(0x300 + 0x10 * i), _in(0xB00), PYTHON) for i in range(4)]
    assert symbols.root_stack([leak, *pending], attempts=2) is leak
    # Nothing lost on every run: nothing names it (one run: the earliest).
    assert symbols.root_stack(pending, attempts=2) is None
    assert symbols.root_stack(pending) is pending[0]


def test_a_stack_cut_before_its_entry_groups_with_no_other() -> None:
    leak = _lost(3, 2, _in(0x100), _in(0x900), PYTHON)
    cut = [_lost(1 + i, 2, _in(0x400 + 0x10 * i), _in(0xC00)) for i in range(2)]  # no way out
    assert cut[0].entry is None
    assert symbols.root_stack([*cut, leak], attempts=2) is leak
    assert symbols.root_stack(cut, attempts=2) is cut[0]


def test_one_entry_point_is_the_earliest_stack_as_ever() -> None:
    late = _lost(7, 5, _in(0x100), _in(0x900), PYTHON)
    early = _lost(2, 2, _in(0x200), _in(0x900), PYTHON)
    assert symbols.root_stack([late, early], attempts=2) is early


def test_a_threads_own_storage_names_no_leak() -> None:
    loader = "/lib64/ld-linux-x86-64.so.2"
    tls = symbols.Frame(1, loader, "__tls_get_addr", 0x38)
    libc = symbols.Frame(2, "/lib/x86_64-linux-gnu/libc.so.6", None, 0x891F5)
    storage = [_lost(1 + i, 3, tls, _in(0x500), _in(0xD00), libc) for i in range(3)]
    leak = _lost(9, 3, _in(0x100), _in(0x900), PYTHON)
    assert storage[0].thread_storage
    assert not leak.thread_storage
    assert symbols.root_stack([*storage, leak], attempts=3) is leak
    assert symbols.root_stack(storage, attempts=3) is None


# -- a real extension module: the name Python calls its function by ----------------

#: A CPython extension whose function ``lose`` (static, as every module
#: function is) keeps a block per call.
MODULE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

static void *volatile last;

static PyObject *lose(PyObject *self, PyObject *arg)
{
    long n = PyLong_AsLong(arg);
    char *p = malloc(40 + (size_t)(n % 3));
    if (p == NULL)
        return PyErr_NoMemory();
    for (int i = 0; i < 20; i++)
        p[i] = (char)(i + n);
    memcpy(p + 20, "lost-by-fakemod", 16);
    last = p;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {{"lose", lose, METH_O, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "fakemod", NULL, -1, methods};
PyMODINIT_FUNC PyInit_fakemod(void) { return PyModule_Create(&module); }
"""

MODULE_TARGET = """
import fakemod

def init(case):
    fakemod.lose(len(case.key or b""))
"""


@pytest.fixture(scope="module")
def fakemod(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module, stripped, in a folder of its own; its path."""
    gcc = shutil.which("gcc")
    include = sysconfig.get_paths()["include"]
    if gcc is None or not (Path(include) / "Python.h").is_file():
        pytest.skip("gcc or Python's headers are missing, so no extension can be built")
    folder = tmp_path_factory.mktemp("fakemod")
    source = folder / "fakemod.c"
    source.write_text(MODULE)
    out = folder / f"fakemod{sysconfig.get_config_var('EXT_SUFFIX')}"
    command = [gcc, "-shared", "-fPIC", "-O0", "-s", f"-I{include}", "-o", str(out), str(source)]
    subprocess.run(command, check=True, capture_output=True)
    return out


def test_a_leak_in_an_extension_names_what_python_called(
    fakemod: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fakemod_target.py").write_text(MODULE_TARGET)
    path = os.pathsep.join([str(tmp_path), str(fakemod.parent), *sys.path])
    monkeypatch.setenv("PYTHONPATH", path)
    report = tmp_path / "report.json"
    cases = [str(SERVER_CASE), str(CORPUS / "0bceeeea15973ffd6ec3bd47d51c573610dd3803")]
    assert main(["check", "fakemod_target:init", *cases, "--json", str(report), "-q"]) == 1
    found = json.loads(report.read_text())["findings"]
    assert len({f["signature"] for f in found}) == 1  # two inputs, one bug
    (finding, *_) = found
    assert f"{fakemod.name}(fn@0x" in finding["root_site"]  # stripped: by its start
    assert finding["root_build"]
    assert any(frame.endswith("[fakemod.lose]") for frame in finding["stack"])


def test_several_entries_ask_for_more_runs() -> None:
    one = _lost(1, 1, _in(0x100), _in(0x900), PYTHON)
    same_entry = _lost(2, 1, _in(0x200), _in(0x900), PYTHON)
    other_entry = _lost(3, 1, _in(0x300), _in(0xA00), PYTHON)
    assert not symbols.several_entries([one, same_entry])
    assert symbols.several_entries([one, other_entry])
    # A lost typed object names the leak: no more runs needed.
    typed = symbols.LostStack(1, 8, 4, (symbols.Frame(0, "mylib.tls", python=True),))
    assert not symbols.several_entries([one, other_entry, typed])


# -- replay on another build ---------------------------------------------------------

#: An unrelated function put before the leaking ones: every start moves.
UNRELATED = "__attribute__((noinline)) int unrelated(int x) { return x * 31 + 7; }\n"


def test_a_stripped_root_replayed_on_another_build_cannot_be_reproduced_exactly(
    builds: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gcc = shutil.which("gcc")
    assert gcc is not None
    (tmp_path / "fake_ext_target.py").write_text(TARGET)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    lib = tmp_path / "lib" / NAME
    lib.parent.mkdir()
    shutil.copy(builds["stripped"], lib)
    monkeypatch.setenv("TLSLEAK_TEST_FAKE_EXT", str(lib))
    out = tmp_path / "out"
    args = ["check", "fake_ext_target:init", str(SERVER_CASE), "--out", str(out), "-q"]
    assert main([*args, "--minimize-budget", "0"]) == 1
    (folder,) = (out / "findings").iterdir()
    stored = json.loads((folder / "finding.json").read_text())
    assert "(fn@0x" in stored["root_site"]
    # The same build, from another folder: still there.
    monkeypatch.chdir(tmp_path / "lib")
    assert main(["replay", str(folder)]) == 1
    assert "still there" in capsys.readouterr().out
    # Rebuilt with every start moved: neither "still there" nor "gone".
    source = tmp_path / "moved.c"
    source.write_text(SOURCE.replace("static void *volatile", UNRELATED + "static void *volatile"))
    command = [gcc, "-shared", "-fPIC", "-O0", "-s", "-o", str(lib), str(source)]
    subprocess.run(command, check=True, capture_output=True)
    assert main(["replay", str(folder)]) == 2
    captured = capsys.readouterr()
    assert "gone" not in captured.out
    assert "cannot reproduce exactly" in captured.err
    assert "not the build loaded now" in captured.err


def test_what_a_library_thread_lost_comes_after_what_the_call_lost() -> None:
    libc = symbols.Frame(2, "/lib/x86_64-linux-gnu/libc.so.6", None, 0x891F5)
    worker = [_lost(1 + i, 3, _in(0x600 + 0x10 * i), _in(0xE00), libc) for i in range(3)]
    leak = _lost(9, 3, _in(0x100), _in(0x900), PYTHON)
    assert worker[0].threaded
    assert not leak.threaded
    assert symbols.root_stack([*worker, leak], attempts=3) is leak
    # Alone, a thread's loss is what there is.
    assert symbols.root_stack(worker, attempts=3) is worker[0]


# -- pausing the heap ledger's stacks (a preloaded child) ---------------------------

PAUSE_CHILD = """
import ctypes, json
from tlsleak.ledgers.process_heap import ProcessHeapLedger
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
heap = ProcessHeapLedger()
heap.start()
mark = heap.begin_stacks()
kept = libc.malloc(70_000)
freed_later = libc.malloc(80_000)
heap.pause_stacks()
unrecorded = libc.malloc(90_000)
libc.free(freed_later)  # a recorded block freed while paused leaves the table
sizes = sorted(s.bytes // 10_000 for s in heap.end_stacks(mark) if 70_000 <= s.bytes < 100_000)
print(json.dumps(sizes))
"""


def test_paused_stacks_keep_what_was_recorded_until_freed() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PAUSE_CHILD],
        env=preload_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    sizes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sizes == [7]  # what was kept, in tens of kB (a block's usable size rounds up)
