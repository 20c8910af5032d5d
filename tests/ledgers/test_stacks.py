"""Caller stacks: the malloc interposer's backtraces, their names, and the leaks that use them.

A leak of a C library built with ``-g`` must name the library's own line that
allocated the first block lost (positive control: control_leaky.c's
``SSL_CTX_new`` call), and fixed code must have no finding at all (negative
control).  The interposer's part runs in a child process started with it
preloaded (pytest's own process is not).
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.check.verdict import Finding, FindingKind
from tlsleak.cli import main
from tlsleak.ledgers import interposer as interposer_module
from tlsleak.ledgers import symbols
from tlsleak.ledgers.interposer import RawStack
from tlsleak.ledgers.shim import preload_env
from tlsleak.targets import Outcome, Status

C_DIR = Path(__file__).parent.parent / "c"
#: A bundled case that the leaky control rejects at its key (a leak).
LEAKING_CASE = Path(__file__).parents[2] / "corpus" / "00522e1f08af6b9b984b969141723ef18e39ca8c"

#: A library with a block kept, a block freed and a block moved by realloc.
HELPER = """\
#include <stdlib.h>
void *keep(void) {
    return malloc(48);
}
void drop(void) {
    free(malloc(48));
}
void *grow(void *p) {
    return realloc(p, 1 << 20);
}
"""


def _line_of(source: Path, text: str) -> int:
    """The 1-based line of ``source`` holding ``text``."""
    for number, line in enumerate(source.read_text().splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} is not in {source}")


@pytest.fixture(scope="module")
def helper(tmp_path_factory: pytest.TempPathFactory, c_compiler: Any) -> Path:
    folder = tmp_path_factory.mktemp("stacks")
    source = folder / "helper.c"
    source.write_text(HELPER)
    return c_compiler(source, folder / "helper.so", "-g", "-O0")  # type: ignore[no-any-return]


# -- naming frames (in pytest's process: dladdr and addr2line need no preload) ----


def _address_in(lib: Path, function: str) -> int:
    """A return-address-like address inside ``function`` of ``lib`` (past its first byte)."""
    loaded = ctypes.CDLL(str(lib))
    start = ctypes.cast(getattr(loaded, function), ctypes.c_void_p).value
    assert start is not None
    return start + 4


def test_a_frame_with_debug_info_is_named_by_file_and_line(helper: Path) -> None:
    address = _address_in(helper, "keep")
    (stack,) = symbols.symbolise([RawStack(1, 48, 1, (address,))])
    (frame,) = stack.frames
    assert frame.object == str(helper)
    assert frame.location is not None
    assert frame.location.startswith("helper.c:")
    assert str(frame).endswith("(keep)")
    assert stack.caller == frame  # helper.so is no runtime library


def test_without_addr2line_a_frame_keeps_symbol_and_offset(
    helper: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(symbols.shutil, "which", lambda name: None)
    monkeypatch.setattr(symbols, "_named", {})  # names from another test are kept
    assert "binutils" in (symbols.addr2line_missing() or "")
    (stack,) = symbols.symbolise([RawStack(1, 48, 1, (_address_in(helper, "keep"),))])
    assert stack.frames[0].location is None
    assert str(stack.frames[0]) == "helper.so(keep+0x4)"


@pytest.mark.parametrize(
    ("path", "runtime"),
    [
        ("/usr/lib/x86_64-linux-gnu/libcrypto.so.3", True),
        ("/usr/lib/x86_64-linux-gnu/libssl.so.3", True),
        ("/lib/x86_64-linux-gnu/libc.so.6", True),
        ("/lib64/ld-linux-x86-64.so.2", True),
        ("/x/tlsleak/ledgers/_native/libtlsleak_heap.so", True),
        ("/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0", True),
        ("/usr/bin/python3.11", True),
        ("/x/lib-dynload/_ctypes.cpython-311-x86_64-linux-gnu.so", True),
        ("/x/cryptography/hazmat/bindings/_rust.abi3.so", True),
        ("/usr/lib/x86_64-linux-gnu/libffi.so.8", True),
        ("/tmp/x/leaky.so", False),
        ("/opt/mongoose/libmongoose.so", False),
        ("/usr/lib/libcurl.so.4", False),
    ],
)
def test_the_runtime_is_never_the_caller(path: str, runtime: bool) -> None:
    assert symbols.is_runtime(path) is runtime


def test_the_root_is_the_first_lost_stack_with_a_caller() -> None:
    python = symbols.Frame(1, "/usr/lib/libpython3.11.so.1.0", "PyObject_Malloc", 9)
    user = symbols.Frame(2, "/tmp/lib.so", "init", 3, "init", "/src/lib.c", 12)
    ssl = symbols.Frame(3, "/usr/lib/libssl.so.3", "SSL_new", 5)
    stacks = [
        symbols.LostStack(1, 10, 1, (python,)),  # the interpreter's own: no caller
        symbols.LostStack(1, 10, 3, (ssl, user)),
        symbols.LostStack(1, 10, 2, (ssl, user, python)),
    ]
    root = symbols.root_stack(stacks)
    assert root is not None
    assert root.first == 2
    assert str(root.caller) == "lib.c:12 (init)"
    assert symbols.root_stack(stacks[:1]) is None


# -- the interposer's stacks (a preloaded child) ---------------------------------

CHILD = """
import ctypes, json, sys
from tlsleak.ledgers.interposer import interposer
lib = ctypes.CDLL(sys.argv[1])
lib.keep.restype = ctypes.c_void_p
lib.grow.restype, lib.grow.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
heap = interposer()
mark = heap.stacks_begin()
kept = lib.keep()
lib.drop()
moved = lib.grow(lib.keep())
heap.stacks_end()
after = lib.keep()  # recording is off: no stack
from tlsleak.ledgers.symbols import symbolise
stacks = symbolise(heap.stacks(mark))
heap.stacks_clear()
cleared = heap.stacks(0)
print(json.dumps({
    "stacks": [[s.blocks, s.bytes, str(s.caller)] for s in stacks if s.caller is not None],
    "cleared": len(cleared),
}))
"""


def test_live_blocks_keep_their_stack_and_freed_ones_leave(helper: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(helper)],
        env=preload_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    keep_line = _line_of_text(HELPER, "return malloc(48);")
    grow_line = _line_of_text(HELPER, "return realloc(p, 1 << 20);")
    callers = {caller: (blocks, size) for blocks, size, caller in got["stacks"]}
    # kept (keep), and the block moved by realloc keeps the stack of its malloc
    # in keep (its size is the new one); drop's block was freed, so it is not here.
    assert callers[f"helper.c:{keep_line} (keep)"][0] == 2
    assert callers[f"helper.c:{keep_line} (keep)"][1] >= (1 << 20) + 48
    assert not any(f":{grow_line} " in caller for caller in callers)
    assert not any("(drop)" in caller for caller in callers)
    assert got["cleared"] == 0


def _line_of_text(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_stacks_need_the_preloaded_interposer() -> None:
    # pytest's own process has no interposer: no stacks, a reason instead of none.
    with pytest.raises(interposer_module.LedgerUnavailable):
        interposer_module.interposer()


# -- leaks named by their caller, end to end ---------------------------------------


def test_a_leak_names_the_line_of_the_c_library_that_lost_it(
    c_compiler: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = c_compiler(C_DIR / "control_leaky.c", tmp_path / "leaky-g.so", "-g")
    line = _line_of(C_DIR / "control_leaky.c", "tls->ctx = SSL_CTX_new(")
    report = tmp_path / "report.json"
    assert main(["check", f"c:{lib}", str(LEAKING_CASE), "--json", str(report)]) == 1
    out = capsys.readouterr().out
    assert f"lost at control_leaky.c:{line} (tls_init_once)" in out
    (finding,) = json.loads(report.read_text())["findings"]
    assert finding["caller"] == f"control_leaky.c:{line} (tls_init_once)"
    assert any("SSL_CTX_new" in frame for frame in finding["stack"])
    assert finding["stack"].index(finding["caller"]) > 0  # inner frames are OpenSSL's
    assert finding["sites"]  # the library-internal sites, as before


def test_a_library_without_openssl_is_named_by_its_own_allocation(
    c_compiler: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # control_malloc.c copies each blob with malloc and loses the copies: only
    # the heap ledger sees it, and no OpenSSL site can say where.
    lib = c_compiler(C_DIR / "control_malloc.c", tmp_path / "malloc-g.so", "-g")
    line = _line_of(C_DIR / "control_malloc.c", "unsigned char *q = malloc(n + 1);")
    case = LEAKING_CASE.with_name("01cdda74e75ec40bc2bd0ae7c27282c9d5a83451")
    report = tmp_path / "report.json"
    assert main(["check", f"c:{lib}", str(case), "--json", str(report)]) == 1
    (finding,) = json.loads(report.read_text())["findings"]
    assert finding["caller"] == f"control_malloc.c:{line} (copy)"
    assert finding["stack"][0] == finding["caller"]  # its own malloc call: no library inside
    assert f"lost at control_malloc.c:{line} (copy)" in capsys.readouterr().out


def test_without_debug_info_the_caller_is_a_symbol_and_offset(
    c_controls: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.json"
    lib = c_controls["leaky"]
    assert main(["check", f"c:{lib}", str(LEAKING_CASE), "--json", str(report)]) == 1
    (finding,) = json.loads(report.read_text())["findings"]
    assert finding["caller"].startswith(f"{lib.name}(tls_init_once+0x")
    assert f"lost at {lib.name}(tls_init_once+0x" in capsys.readouterr().out


def test_the_fixed_c_library_has_no_finding_and_no_caller(
    c_compiler: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = c_compiler(C_DIR / "control_fixed.c", tmp_path / "fixed-g.so", "-g")
    assert main(["check", f"c:{lib}", str(LEAKING_CASE)]) == 0
    out = capsys.readouterr().out
    assert "no findings" in out
    assert "lost at" not in out


# -- the finding's form ----------------------------------------------------------


def _leak(**kwargs: Any) -> Finding:
    outcome = Outcome(Status.REJECTED, "key", (), "bad key")
    return Finding(FindingKind.LEAK, "c:x", InitCase(), outcome, delta={"heap.blocks": 3}, **kwargs)


def test_the_caller_is_in_json_only_when_known_and_not_in_the_signature() -> None:
    plain = _leak()
    assert "caller" not in plain.to_json()
    assert "stack" not in plain.to_json()
    named = _leak(caller="lib.c:12 (init)", stack=("libssl.so.3(SSL_new+0x5)", "lib.c:12 (init)"))
    assert Finding.from_json(named.to_json()) == named
    assert named.signature == plain.signature
    assert "lost at lib.c:12 (init)" in named.summary()
    assert "lost at" not in plain.summary()


# -- the signature root of a leak only the heap sees ---------------------------------

#: An unrelated function (and its exported user), put before the leaking code:
#: the blob copier, and every offset after it, moves.
UNRELATED = """
__attribute__((noinline)) static int unrelated(int x)
{
    int y = 0;
    for (int i = 0; i < x; i++)
        y = y * 31 + i;
    return y;
}

EXPORT int tls_unrelated(int x) { return unrelated(x); }
"""


def _malloc_control(source: Path, extra: str = "", *, export_copy: bool = False) -> Path:
    """control_malloc.c with ``extra`` near its top; ``export_copy`` exports its blob copier."""
    text = (C_DIR / "control_malloc.c").read_text()
    text = text.replace("static const char BEGIN[]", extra + "static const char BEGIN[]")
    if export_copy:
        text = text.replace("static unsigned char *copy(", "EXPORT unsigned char *copy(")
    source.write_text(text)
    return source


def _heap_only_finding(lib: Path, tmp_path: Path) -> dict[str, Any]:
    case = LEAKING_CASE.with_name("01cdda74e75ec40bc2bd0ae7c27282c9d5a83451")
    report = tmp_path / "report.json"
    assert main(["check", f"c:{lib}", str(case), "--json", str(report)]) == 1
    (finding,) = json.loads(report.read_text())["findings"]
    return finding  # type: ignore[no-any-return]


def test_a_heap_only_leak_is_rooted_at_its_exported_symbol_across_rebuilds(
    c_compiler: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Built without debug info, as a release build is: frames are offsets.
    lib = tmp_path / "malloc.so"
    c_compiler(_malloc_control(tmp_path / "a.c"), lib)
    before = _heap_only_finding(lib, tmp_path)
    # Rebuilt in place with an unrelated function added: the offsets move.
    c_compiler(_malloc_control(tmp_path / "b.c", UNRELATED), lib)
    after = _heap_only_finding(lib, tmp_path)
    capsys.readouterr()
    assert before["stack"] != after["stack"]  # the rebuild did move the code
    # copy() is static (dladdr names no symbol for it): its exported caller is the root.
    assert before["root_site"] == after["root_site"] == "malloc.so(tls_init_once)"
    assert before["signature"] == after["signature"]
    assert "+0x" not in before["signature"]


def test_another_leaking_function_is_another_heap_only_leak(
    c_compiler: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = tmp_path / "malloc.so"
    c_compiler(_malloc_control(tmp_path / "a.c"), lib)
    inline = _heap_only_finding(lib, tmp_path)
    # The same blocks lost by an exported copy(): another function lost them.
    c_compiler(_malloc_control(tmp_path / "b.c", export_copy=True), lib)
    exported = _heap_only_finding(lib, tmp_path)
    capsys.readouterr()
    assert exported["root_site"] == "malloc.so(copy)"
    assert exported["signature"] != inline["signature"]


def test_the_root_is_the_first_exported_symbol_outside_the_runtime() -> None:
    libc = symbols.Frame(1, "/lib/x86_64-linux-gnu/libc.so.6", "malloc", 9)
    static = symbols.Frame(2, "/build/v2/libfoo.so.1", None, 0x117C)  # no exported symbol
    exported = symbols.Frame(3, "/build/v2/libfoo.so.1", "foo_init", 0x5B)
    python = symbols.Frame(4, "/usr/bin/python3.11", "main", 3)
    assert symbols.LostStack(1, 8, 1, (libc, static, exported, python)).root == (
        "libfoo.so.1(foo_init)"  # no folder, no offset
    )
    # Negative controls: a stack that exports nothing outside the runtime has no root.
    assert symbols.LostStack(1, 8, 1, (libc, static, python)).root is None
    assert symbols.LostStack(1, 8, 1, (libc, python)).root is None


def test_a_heap_only_leak_stored_without_a_root_still_reproduces() -> None:
    stored = _leak(caller="malloc.so+0x117c", stack=("malloc.so+0x117c",))
    fresh = _leak(root_site="malloc.so(tls_init_once)", caller="malloc.so+0x1190")
    assert fresh.signature != stored.signature
    assert fresh.reproduces(stored)
    # Negative control: a stored root that differs is another bug.
    other = _leak(root_site="malloc.so(copy)")
    assert not fresh.reproduces(other)
