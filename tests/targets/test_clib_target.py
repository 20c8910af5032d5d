"""The c: target: C libraries behind the tls_init_once ABI, run in this process.

The crash control is only built and loaded here, never called: it would take
pytest down with it.  Leaks are the native heap ledger's business (it counts
only in preloaded processes); here we check outcomes, messages, the error
queue and how bad specs are refused.
"""

from __future__ import annotations

import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.check.oracle import FindingKind, Oracle
from tlsleak.cli import main
from tlsleak.openssl.errors import OpenSSLError, SystemErrorQueue, system_error_queue
from tlsleak.targets import Status, Step, UnknownTarget, resolve_target
from tlsleak.targets.clib import CLibraryTarget

CCompiler = Callable[..., Path]  # the c_compiler fixture (tests/conftest.py)
REPO = Path(__file__).resolve().parents[2]

# A harness without tls_last_error that returns the first CA byte as a signed
# number, and a variable that is not a function.
ECHO_SOURCE = r"""
#include <stddef.h>
int not_a_function = 1;
int tls_init_once(const unsigned char *ca, size_t ca_len, const unsigned char *cert,
                  size_t cert_len, const unsigned char *key, size_t key_len, int is_client) {
    (void)cert; (void)cert_len; (void)key; (void)key_len; (void)is_client;
    return ca_len ? (signed char)ca[0] : 0;
}
"""

INPUT_CONTROLS = ["leaky", "fixed", "sslnew", "fixed-keep-errors"]


@pytest.fixture(scope="module")
def echo_library(tmp_path_factory: pytest.TempPathFactory, c_compiler: CCompiler) -> Path:
    folder = tmp_path_factory.mktemp("echo")
    source = folder / "echo.c"
    source.write_text(ECHO_SOURCE)
    return c_compiler(source, folder / "libecho.so")


@pytest.fixture(scope="module")
def doc_example(tmp_path_factory: pytest.TempPathFactory, c_compiler: CCompiler) -> Path:
    """The example library of the README's "C libraries" section, built exactly as written."""
    text = (REPO / "README.md").read_text()
    [source_text] = [
        block
        for block in re.findall(r"```c\n(.*?)```", text, re.S)
        if "int tls_init_once(" in block and "{" in block
    ]
    folder = tmp_path_factory.mktemp("doc-example")
    source = folder / "myinit.c"
    source.write_text(source_text)
    return c_compiler(source, folder / "libmyinit.so")


def _target(path: Path) -> CLibraryTarget:
    target = resolve_target(f"c:{path}")
    assert isinstance(target, CLibraryTarget)
    return target


# --- building and loading -------------------------------------------------------


def test_every_control_builds_and_exports_the_abi(c_controls: dict[str, Path]) -> None:
    # Loading checks both exports; the crash control is loaded but never called.
    for path in c_controls.values():
        target = _target(path)
        assert target._last_error is not None


# Runs the crash control in a child: one harmless case, then the cue.
CUE_SCRIPT = """
import sys
from tlsleak.cases.case import InitCase
from tlsleak.targets import resolve_target
target = resolve_target("c:" + sys.argv[1])
print(target.run(InitCase(cert=b"not a certificate")).status, flush=True)
target.run(InitCase(cert=sys.argv[2].encode()))
"""


def _no_core_dump() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def test_crash_control_crashes_and_hangs_on_cue(c_controls: dict[str, Path]) -> None:
    command = [sys.executable, "-c", CUE_SCRIPT, str(c_controls["crash"])]
    crash = subprocess.run(
        [*command, "CRASH now"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_no_core_dump,
        check=False,
    )
    assert (crash.returncode, crash.stdout) == (-signal.SIGSEGV, "rejected\n")
    with subprocess.Popen(
        [*command, "HANG now"], stdout=subprocess.PIPE, text=True, preexec_fn=_no_core_dump
    ) as hang:
        assert hang.stdout is not None
        try:
            assert hang.stdout.readline() == "rejected\n"
            with pytest.raises(subprocess.TimeoutExpired):
                hang.wait(timeout=1)
        finally:
            hang.kill()


def test_the_target_is_named_by_its_spec(c_controls: dict[str, Path]) -> None:
    spec = f"c:{c_controls['fixed']}"
    target = resolve_target(spec)
    assert target.name == spec
    assert target.ledgers == ("openssl-heap", "fds")
    assert "tls_init_once" in target.description
    assert target.error_queue() is system_error_queue()


def test_spec_with_symbol_and_path_with_colons(
    c_controls: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    odd = tmp_path / "a:b" / "lib:x.so"
    odd.parent.mkdir()
    shutil.copy(c_controls["fixed"], odd)
    for spec in (f"c:{odd}", f"c:{odd}:tls_init_once"):
        assert resolve_target(spec).run(InitCase()).status is Status.ACCEPTED
    # A relative path is the file in the current folder, not a library search.
    monkeypatch.chdir(odd.parent)
    assert resolve_target("c:lib:x.so").run(InitCase()).status is Status.ACCEPTED


# --- outcomes -------------------------------------------------------------------


@pytest.mark.parametrize("control", INPUT_CONTROLS)
def test_controls_accept_valid_input(
    control: str,
    c_controls: dict[str, Path],
    valid_case: InitCase,
    valid_client_case: InitCase,
    der_case: InitCase,
) -> None:
    target = _target(c_controls[control])
    for case in (valid_case, valid_client_case, der_case, InitCase()):
        assert target.run(case).status is Status.ACCEPTED


@pytest.mark.parametrize("control", INPUT_CONTROLS)
def test_controls_reject_with_their_own_error_text(
    control: str, c_controls: dict[str, Path], bad_cert_case: InitCase, bad_key_case: InitCase
) -> None:
    target = _target(c_controls[control])
    queue = system_error_queue()
    for case, step, text in (
        (bad_cert_case, Step.CERTIFICATE, "certificate: cannot parse certificate (PEM routines: "),
        (bad_key_case, Step.KEY, "key: cannot parse private key ("),
    ):
        outcome = target.run(case)
        queue.clear()
        assert outcome.status is Status.REJECTED
        # The ABI has no step; the controls start their error text with one.
        assert outcome.step == step
        assert outcome.message.startswith(text)  # tls_last_error()'s text
        assert outcome.errors == ()  # the queue is the oracle's business


def test_key_without_its_certificate_fails_the_key_check(
    c_controls: dict[str, Path], valid_case: InitCase
) -> None:
    outcome = _target(c_controls["fixed"]).run(InitCase(key=valid_case.key))
    assert outcome.status is Status.REJECTED
    assert outcome.message.startswith("check-key: ")


def test_return_values_other_than_0_and_1_are_harness_errors(echo_library: Path) -> None:
    target = _target(echo_library)
    assert target._last_error is None
    assert target.run(InitCase(ca=b"\x00")).status is Status.ACCEPTED
    rejected = target.run(InitCase(ca=b"\x01"))
    assert (rejected.status, rejected.message) == (Status.REJECTED, "")
    for byte, code in ((b"\xf9", -7), (b"\x02", 2)):
        outcome = target.run(InitCase(ca=byte))
        assert outcome.status is Status.ERROR
        assert outcome.message == f"harness returned {code}"


def test_the_documented_example_is_a_correct_library(
    doc_example: Path,
    valid_case: InitCase,
    valid_client_case: InitCase,
    der_case: InitCase,
    bad_cert_case: InitCase,
    bad_key_case: InitCase,
) -> None:
    target = _target(doc_example)
    with Oracle(target, ledgers=["fds"]) as oracle:
        verdicts = [
            oracle.check(case)
            for case in (valid_case, valid_client_case, der_case, bad_cert_case, bad_key_case)
        ]
    assert [v.outcome.status for v in verdicts] == [Status.ACCEPTED] * 3 + [Status.REJECTED] * 2
    assert verdicts[3].outcome.message.startswith("certificate: cannot parse")
    assert verdicts[4].outcome.message.startswith("key: cannot use private key")
    assert all(v.clean for v in verdicts)  # nothing left on the error queue


# --- the error queue --------------------------------------------------------------


def test_system_queue_sees_errors_a_library_leaves_queued(
    c_controls: dict[str, Path], bad_cert_case: InitCase
) -> None:
    queue = system_error_queue()
    queue.clear()
    _target(c_controls["fixed-keep-errors"]).run(bad_cert_case)
    left = queue.drain()
    assert OpenSSLError("PEM routines", "ASN1 lib") in left
    assert queue.drain() == ()  # drained means empty
    _target(c_controls["fixed-keep-errors"]).run(bad_cert_case)
    queue.clear()
    assert queue.drain() == ()


def test_system_queue_stays_empty_for_a_careful_library(
    c_controls: dict[str, Path], bad_cert_case: InitCase, bad_key_case: InitCase
) -> None:
    queue = system_error_queue()
    queue.clear()
    for case in (bad_cert_case, bad_key_case):
        assert _target(c_controls["fixed"]).run(case).status is Status.REJECTED
        assert queue.drain() == ()


def test_a_queue_through_the_library_is_the_system_queue(
    c_controls: dict[str, Path], bad_cert_case: InitCase
) -> None:
    # The same libcrypto, reached through the library's own dependencies.
    through_library = SystemErrorQueue(_target(c_controls["fixed-keep-errors"])._lib)
    system_error_queue().clear()
    _target(c_controls["fixed-keep-errors"]).run(bad_cert_case)
    assert through_library.drain()
    assert system_error_queue().drain() == ()


@pytest.mark.parametrize(("control", "findings"), [("fixed", 0), ("fixed-keep-errors", 2)])
def test_oracle_reports_errors_left_queued(
    control: str,
    findings: int,
    c_controls: dict[str, Path],
    valid_case: InitCase,
    bad_cert_case: InitCase,
    bad_key_case: InitCase,
) -> None:
    with Oracle(_target(c_controls[control]), ledgers=["fds"]) as oracle:
        verdicts = [oracle.check(c) for c in (valid_case, bad_cert_case, bad_key_case)]
    found = [f for v in verdicts for f in v.findings]
    assert len(found) == findings
    assert all(f.kind is FindingKind.ERROR_QUEUE and f.errors_left for f in found)


# --- bad specs ---------------------------------------------------------------------


def _refusal(spec: str) -> str:
    with pytest.raises(UnknownTarget) as info:
        resolve_target(spec)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.so"
    assert _refusal(f"c:{missing}") == f"c:{missing}: no such file: {missing}"
    assert "no such file" in _refusal(f"c:{tmp_path}/nul\0byte.so")


def test_folder_is_refused(tmp_path: Path) -> None:
    assert _refusal(f"c:{tmp_path}") == f"c:{tmp_path}: not a file: {tmp_path}"


def test_text_file_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "libtext.so"
    text.write_text("not a library\n" * 100)
    message = _refusal(f"c:{text}")
    assert message.startswith(f"c:{text}: not a loadable shared library (")


def test_missing_symbol_is_refused(c_controls: dict[str, Path], echo_library: Path) -> None:
    fixed = c_controls["fixed"]
    assert _refusal(f"c:{fixed}:nothere") == f"c:{fixed}:nothere: {fixed} does not export nothere()"
    optional_only = f"c:{echo_library}:tls_last_error"  # optional, and absent here
    assert _refusal(optional_only).endswith("does not export tls_last_error()")


def test_wrong_symbols_are_refused(c_controls: dict[str, Path], echo_library: Path) -> None:
    fixed = c_controls["fixed"]
    # dlsym would find libssl's SSL_new through the library's dependencies.
    assert "SSL_new resolves to " in _refusal(f"c:{fixed}:SSL_new")
    assert _refusal(f"c:{echo_library}:not_a_function").endswith("is a variable, not a function")
    assert _refusal(f"c:{fixed}:1x") == f"c:{fixed}:1x: '1x' is not a C function name"
    assert _refusal(f"c:{fixed}:").endswith("'' is not a C function name")
    assert "c:PATH" in _refusal("c:")


def test_cli_refuses_a_bad_library_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "libtext.so"
    text.write_text("not a library\n" * 100)
    assert main(["check", f"c:{text}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "not a loadable shared library" in err


@pytest.mark.parametrize(
    ("text", "step"),
    [
        ("key: bad", "key"),
        ("check-key: mismatch", "check-key"),
        ("PEM routines: no start line", "init"),  # not a step name
        ("no colon at all", "init"),
        ("", "init"),
    ],
)
def test_step_is_taken_from_the_error_text_only_when_it_names_one(text: str, step: str) -> None:
    from tlsleak.targets.clib import _step_of

    assert _step_of(text) == step
