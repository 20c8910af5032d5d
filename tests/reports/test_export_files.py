"""``tlsleak export``'s files: what goes in an export, and how the folder is written.

These render and write only; ``tests/cli/test_export_cli.py`` runs the exported
reproducers without tlsleak.
"""

from __future__ import annotations

import ast
import json
import os
import re
import runpy
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase, Mode
from tlsleak.check.findings import FailPoint, FindingError, FindingStore, load_stored
from tlsleak.check.oracle import Finding, FindingKind
from tlsleak.reports.export import MARKER, ExportError, blob_files, export_finding, render
from tlsleak.targets.base import Outcome, Status

PEM_CERT = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
STACK = (
    "tlsleak/targets/control.py:133 (_init)",
    "tlsleak/targets/control.py:185 (ControlTarget.run)",
    "tlsleak/check/oracle.py:211 (Oracle._attempt)",
    "<frozen runpy>:88 (_run_code)",
)


def _stored(
    tmp_path: Path,
    target: str = "control-leaky",
    case: InitCase | None = None,
    *,
    fail_point: FailPoint | None = None,
) -> Path:
    """A finding folder as check stores it, for a leak on ``target``."""
    case = case or InitCase(mode=Mode.CLIENT, cert=b"\x30\x03", key=KEY, password=b"pw")
    finding = Finding(
        FindingKind.LEAK,
        target,
        case,
        Outcome(Status.REJECTED, "certificate", (), "cannot parse certificate"),
        delta={"SSL_CTX": 1, "SSL": 1, "heap.bytes": 29986},
        replays=3,
        caller=STACK[0],
        stack=STACK,
    )
    folder, created = FindingStore(tmp_path / "findings").add(finding, case, fail_point=fail_point)
    assert created
    return folder


def _imports(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_a_control_leak_exports_blobs_a_script_without_tlsleak_and_a_report(
    tmp_path: Path,
) -> None:
    files = render(load_stored(_stored(tmp_path)))
    assert set(files) == {
        "cert.der", "key.pem", "password", "reproduce.py", "REPORT.md", MARKER
    }  # fmt: skip
    assert files["key.pem"] == KEY
    assert files["password"] == b"pw"
    script = files["reproduce.py"].decode()
    assert "tlsleak" not in _imports(script)
    assert {"cryptography", "ctypes"} <= _imports(script)
    assert "LEAKY = True" in script
    assert "mode=Mode.CLIENT" in script
    report = files["REPORT.md"].decode()
    assert report.startswith("# leak in control-leaky: SSL_CTX +1, SSL +1, heap.bytes +29986")
    for text in ("control-leaky | leak | SSL, SSL_CTX", STACK[0], "python3 reproduce"):
        assert text in report
    # tlsleak's own frames that drove the attempt mean nothing upstream.
    assert STACK[1] not in report
    assert "oracle.py" not in report
    assert "<frozen" not in report
    assert "`key.pem` is a private key" in report
    assert "Allocation failure" not in report


@pytest.mark.parametrize(
    ("target", "imported"),
    [
        ("control-fixed", "cryptography"),
        ("pyopenssl", "OpenSSL"),
        ("ssl", "ssl"),
        ("mbedtls", "mbedtls"),
        ("grpc", "grpc"),
        ("mongoose", "cymongoose"),
        ("mylib.tls:Init.run", "importlib"),
    ],
)
def test_every_python_target_kind_gives_a_script_that_compiles(
    tmp_path: Path, target: str, imported: str
) -> None:
    script = render(load_stored(_stored(tmp_path, target)))["reproduce.py"].decode()
    compile(script, "reproduce.py", "exec")
    assert imported in _imports(script)
    assert "tlsleak" not in _imports(script)
    if target == "mylib.tls:Init.run":
        assert "import_module('mylib.tls')" in script
        assert "('Init', 'run')" in script


def test_a_c_target_exports_a_driver_with_the_blobs_and_a_makefile(tmp_path: Path) -> None:
    case = InitCase(ca=PEM_CERT, cert=b"\x30\x00", password=b"pw", server_name=b"h")
    files = render(load_stored(_stored(tmp_path, "c:/opt/lib/libx.so:my_init", case)))
    assert set(files) == {"ca.pem", "cert.der", "reproduce.c", "Makefile", "REPORT.md", MARKER}
    driver = files["reproduce.c"].decode()
    assert '"/opt/lib/libx.so"' in driver
    assert 'dlsym(lib, "my_init")' in driver
    assert "static const size_t CERT_LEN = 2;" in driver
    assert "0x30, 0x00" in driver
    assert "static const size_t KEY_LEN = 0;" in driver
    assert "#define IS_CLIENT 0" in driver
    report = files["REPORT.md"].decode()
    assert report.startswith("# leak in libx.so (my_init):")
    assert "the C ABI does not carry" in report
    assert "mallinfo2" in report


def test_a_c_stack_is_shown_from_the_allocator_to_the_library_and_no_further(
    tmp_path: Path,
) -> None:
    stack = (
        "libtlsleak_heap.so+0x1243",
        "libcrypto.so.3(CRYPTO_zalloc+0x9)",
        "libssl.so.3(SSL_CTX_new_ex+0x5a)",
        "mylib.c:19 (mylib_tls_init)",
        "harness.c:7 (tls_init_once)",
        "libffi.so.8(ffi_call+0xcd)",
        "_ctypes.cpython-311-x86_64-linux-gnu.so+0x1117a",
        "libpython3.11.so.1.0(PyEval_EvalCode+0x224)",
        "harness.c:99 (after_the_driver)",
    )
    folder = _stored(tmp_path, "c:/lib/libx.so", InitCase(cert=b"\x30"))
    data = json.loads((folder / "finding.json").read_text())
    data.update(caller=stack[3], stack=list(stack))
    (folder / "finding.json").write_text(json.dumps(data))
    report = render(load_stored(folder))["REPORT.md"].decode()
    shown = [line.strip() for line in report.splitlines() if line.strip() in stack]
    assert shown == list(stack[1:5])


def test_an_allocation_failure_says_the_reproducer_cannot_inject_it(tmp_path: Path) -> None:
    folder = _stored(tmp_path, fail_point=FailPoint(fail_at=41, warmup_allocations=300))
    files = render(load_stored(folder))
    report = files["REPORT.md"].decode()
    assert "## Allocation failure needed" in report
    assert "allocation number 41 of the attempt (a clean run of the same input made 300)" in report
    assert "The standalone script can't make an allocation fail" in report
    assert "grow every round" not in report
    assert files["key.pem"] == KEY  # the blobs are exported all the same


def test_the_c_driver_fails_the_allocation_itself_counted_from_the_end(tmp_path: Path) -> None:
    point = FailPoint(fail_at=449, warmup_allocations=456)
    folder = _stored(tmp_path, "c:/lib/libx.so", InitCase(), fail_point=point)
    files = render(load_stored(folder))
    driver = files["reproduce.c"].decode()
    assert "#define FAIL_FROM_END 7" in driver
    assert "#define TLSLEAK_FAIL_AT 449" in driver
    report = files["REPORT.md"].decode()
    assert "The driver does that itself" in report
    assert "the one 7 before the last" in report
    # Without the fail point, the driver runs clean.
    plain = render(load_stored(_stored(tmp_path / "plain", "c:/lib/libx.so", InitCase())))
    assert "#define FAIL_FROM_END -1" in plain["reproduce.c"].decode()


def test_blob_files_are_named_by_their_encoding_and_empty_ones_left_out() -> None:
    case = InitCase(ca=b"junk -----BEGIN X", cert=b"\x30", server_name=b"a")
    assert blob_files(case) == {
        "ca.pem": ("ca", b"junk -----BEGIN X"),
        "cert.der": ("cert", b"\x30"),
        "server_name": ("server_name", b"a"),
    }
    assert set(blob_files(case, c_abi=True)) == {"ca.pem", "cert.der"}


@pytest.mark.parametrize(
    ("target", "package"),
    [("mbedtls", "python-mbedtls"), ("grpc", "grpcio"), ("mongoose", "cymongoose")],
)
def test_a_stack_script_says_what_it_needs_and_reaches_nothing_but_loopback(
    tmp_path: Path, target: str, package: str
) -> None:
    files = render(load_stored(_stored(tmp_path, target)))
    report = files["REPORT.md"].decode()
    assert f"Needs Python 3 with `{package}` (`pip install {package}`)" in report
    assert "the finding does not record the version it was made with" in report
    assert f"stack: {package} N.N.N" in report  # the expected output's version line
    script = files["reproduce.py"].decode()
    assert "STACK = f" in script  # the script prints the version it runs on
    # The only address a script names is loopback (Mongoose's SNTP server
    # appears in a comment saying why it is never asked).
    assert set(re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", script)) <= {"127.0.0.1"}


def test_an_unknown_target_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no standalone template for target 'wolfssl'"):
        render(load_stored(_stored(tmp_path, "wolfssl")))


# --- the script's verdict -------------------------------------------------------


@pytest.fixture
def heap_growth(tmp_path: Path) -> Callable[[list[int], int], tuple[float, bool]]:
    """The exported script's own ``heap_growth``, from a script loaded without running main."""
    export_finding(_stored(tmp_path, "control-fixed"), tmp_path / "export")
    script = runpy.run_path(str(tmp_path / "export" / "reproduce.py"), run_name="reproduce")
    function: Callable[[list[int], int], tuple[float, bool]] = script["heap_growth"]
    return function


@pytest.mark.parametrize(
    ("ends", "attempts", "leak"),
    [
        # Positive controls, measured: grpcio's key-pair array (one 24-byte
        # block, a 32-byte chunk, an attempt; a round's noise is +-8 KB) and
        # Mongoose's lost CA-bundle DER, both at about 32 bytes an attempt.
        ([33344, 76192, 108704, 134768, 167408], 1000, True),
        ([32128, 64208, 96208], 1000, True),
        ([21904000, 43808000, 65712000], 1000, True),  # the leaky control
        # Negative controls: a one-off jump at round 1, free-list noise, and
        # a cache filling up, less each round (45 bytes an attempt, then less).
        ([44480, 44480, 44480], 100, False),
        ([-3824, -5840, -4736, -2832, 3200, 3264], 200, False),
        ([9000, 13500, 16000, 17000], 100, False),
    ],
)
def test_the_verdict_calls_steady_growth_and_not_noise_or_a_cache_filling_up(
    heap_growth: Callable[[list[int], int], tuple[float, bool]],
    ends: list[int],
    attempts: int,
    leak: bool,
) -> None:
    slope, dying = heap_growth(ends, attempts)
    assert (slope >= 16 and not dying) is leak, (slope, dying)


# --- writing ------------------------------------------------------------------


def test_the_export_is_private_and_whole(tmp_path: Path) -> None:
    into = tmp_path / "deep" / "export"
    files = export_finding(_stored(tmp_path), into)
    assert stat.S_IMODE(into.stat().st_mode) == 0o700
    assert sorted(p.name for p in into.iterdir()) == sorted(files)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in into.iterdir())
    assert (into / MARKER).read_text().split() == sorted(files)
    assert not [p for p in into.parent.iterdir() if p.name.startswith(".")]  # no temporaries


def test_an_empty_folder_is_taken_and_a_non_empty_one_refused(tmp_path: Path) -> None:
    folder = _stored(tmp_path)
    (tmp_path / "empty").mkdir()
    export_finding(folder, tmp_path / "empty")
    assert (tmp_path / "empty" / "reproduce.py").is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match=r"exists and is not empty .*--force"):
        export_finding(folder, mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_force_replaces_a_previous_export_and_never_the_users_files(tmp_path: Path) -> None:
    folder = _stored(tmp_path)
    into = tmp_path / "export"
    export_finding(folder, into)
    (into / "reproduce").write_bytes(b"a binary the maintainer built")
    (into / "REPORT.md").write_text("stale")
    export_finding(folder, into, force=True)
    assert (into / "REPORT.md").read_text().startswith("# leak")
    assert not (into / "reproduce").exists()
    (into / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match=r"not a tlsleak export \(notes.txt\)"):
        export_finding(folder, into, force=True)
    assert (into / "notes.txt").read_text() == "keep me"
    other = tmp_path / "other"
    other.mkdir()
    (other / "a").write_text("x")
    with pytest.raises(ExportError, match="not a tlsleak export"):
        export_finding(folder, other, force=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_destination_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    folder = _stored(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="file: exists and is not a folder"):
        export_finding(folder, tmp_path / "file")
    with pytest.raises(ExportError, match=r"cannot write: .*file is not a folder"):
        export_finding(folder, tmp_path / "file" / "export")


def test_a_folder_that_is_not_a_finding_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    with pytest.raises(FindingError, match="not a finding folder"):
        export_finding(tmp_path, tmp_path / "export")
    folder = _stored(tmp_path)
    data = json.loads((folder / "finding.json").read_text())
    del data["outcome"]
    (folder / "finding.json").write_text(json.dumps(data))
    with pytest.raises(FindingError, match="not a finding"):
        export_finding(folder, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_a_killed_exports_leftovers_go_after_an_hour_and_young_ones_stay(tmp_path: Path) -> None:
    """A run killed mid-write leaves its temporary folder, key and all, next to DIR."""
    old, young = tmp_path / ".export.tmp-old", tmp_path / ".export.tmp-young"
    for leftover in (old, young):
        leftover.mkdir()
        (leftover / "key.pem").write_bytes(KEY)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    export_finding(_stored(tmp_path), tmp_path / "export")
    assert not old.exists()
    assert young.exists()  # it may be another export still writing
