"""``tlsleak export``: the exported reproducers show the planted leaks *without tlsleak*.

Positive controls: a finding that ``tlsleak check`` stored for ``control-leaky``
and for the leaky C control is exported, and the exported ``reproduce.py`` run
by an interpreter that cannot import tlsleak, and ``reproduce.c`` compiled and
run, print growth that is positive and grows every round.  Negative controls:
the same export for ``control-fixed``, and the same C driver run on the fixed
C control, stay flat.  The real stacks' scripts (mbedtls, grpc, mongoose) show
their stack's known leaks and stay flat where the stack is clean.  Bad input
is one line and exit status 2.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase, Mode
from tlsleak.cases.files import write_case
from tlsleak.cases.material import KeyFormat, KeyType, cert_bytes, identity, key_bytes
from tlsleak.check.findings import FindingStore
from tlsleak.check.oracle import Finding, FindingKind
from tlsleak.cli import main
from tlsleak.reports.export import export_finding
from tlsleak.targets import resolve_target
from tlsleak.targets.base import Outcome, Status

#: Small rounds: a leaky attempt loses tens of KB, and the machine is shared.
ROUNDS, ATTEMPTS = 3, 400
#: The modules the exported scripts import besides the standard library (those installed).
STACK_MODULES = (
    "cryptography",
    "OpenSSL",
    "cffi",
    "_cffi_backend",
    "typing_extensions",
    *("mbedtls", "certifi", "grpc", "cymongoose"),  # the real stacks, where installed
)


def _check_and_export(
    tmp_path: Path, target: str, case: InitCase, capsys: pytest.CaptureFixture[str]
) -> Path:
    """Run ``tlsleak check TARGET`` on ``case``, export the one finding; the export folder."""
    write_case(tmp_path / "cases", case)
    out = tmp_path / "out"
    assert main(["check", target, str(tmp_path / "cases"), "--out", str(out)]) == 1
    capsys.readouterr()
    (folder,) = (out / "findings").iterdir()
    into = tmp_path / "export"
    assert main(["export", str(folder), "--into", str(into)]) == 0
    assert capsys.readouterr().out.startswith(f"{into}: ")
    return into


Interpreter = tuple[list[str], dict[str, str]]


@pytest.fixture(scope="module")
def plain_python(tmp_path_factory: pytest.TempPathFactory) -> Interpreter:
    """An interpreter command that has the stacks (cryptography, pyOpenSSL...) but not tlsleak.

    This interpreter without its site-packages (``-S``, where the editable
    install puts tlsleak), with a folder of links to the stack's packages only.
    """
    farm = tmp_path_factory.mktemp("site")
    for name in STACK_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        where = spec.submodule_search_locations
        origin = Path(where[0]) if where else Path(spec.origin)
        (farm / origin.name).symlink_to(origin)
    command = [sys.executable, "-S"]
    env = {"PYTHONPATH": str(farm), "PATH": os.environ.get("PATH", "")}
    probe = subprocess.run([*command, "-c", "import tlsleak"], env=env, capture_output=True)
    assert probe.returncode != 0
    assert b"No module named 'tlsleak'" in probe.stderr
    return command, env


def _run_script(
    python: Interpreter, script: Path, *extra: str, cwd: Path | None = None, status: int = 0
) -> str:
    """The script's output; ``status`` is the exit status it must give (1: it says it leaks)."""
    command, env = python
    argv = [*command, str(script), "--rounds", str(ROUNDS), "--attempts", str(ATTEMPTS)]
    done = subprocess.run(
        [*argv, *extra], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == status, done.stdout + done.stderr
    return done.stdout


def _rows(output: str) -> list[list[int]]:
    """The numbers of each round's row (round, attempts, then the growth columns)."""
    rows = []
    for line in output.splitlines():
        words = line.split()
        if words and words[0].isdigit():
            rows.append([int(float(w)) for w in words])
    assert [r[0] for r in rows] == list(range(1, ROUNDS + 1)), output
    return rows


def _grows(column: list[int], per_round: int) -> bool:
    return all(b - a >= per_round for a, b in zip([0, *column], column, strict=False))


def test_the_exported_control_leaky_script_shows_the_leak_without_tlsleak(
    tmp_path: Path,
    bad_cert_case: InitCase,
    plain_python: Interpreter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    into = _check_and_export(tmp_path, "control-leaky", bad_cert_case, capsys)
    output = _run_script(plain_python, into / "reproduce.py", status=1)
    assert "outcome: rejected: certificate: cannot parse certificate" in output
    rows = _rows(output)
    # rss and heap (mallinfo2) grow by about an SSL_CTX and an SSL per attempt.
    assert _grows([r[2] for r in rows], ATTEMPTS * 1000), output
    assert _grows([r[3] for r in rows], ATTEMPTS * 1000), output
    assert rows[-1][5] > 1_000_000  # heap per 1000 attempts: over a KB an attempt


def test_the_same_export_for_control_fixed_stays_flat(
    tmp_path: Path,
    bad_cert_case: InitCase,
    plain_python: Interpreter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    into = _check_and_export(tmp_path, "control-leaky", bad_cert_case, capsys)
    (folder,) = (tmp_path / "out" / "findings").iterdir()
    data = json.loads((folder / "finding.json").read_text())
    (folder / "finding.json").write_text(json.dumps({**data, "target": "control-fixed"}))
    assert main(["export", str(folder), "--into", str(into), "--force"]) == 0
    assert "LEAKY = False" in (into / "reproduce.py").read_text()
    rows = _rows(_run_script(plain_python, into / "reproduce.py", status=0))
    assert abs(rows[-1][3]) < 100_000  # over every round: what 5 leaky attempts lose


@pytest.mark.skipif(
    not Path("/usr/bin/python3").is_file(), reason="no system Python at /usr/bin/python3"
)
def test_the_system_python_without_tlsleak_shows_the_leak_too(
    tmp_path: Path, bad_cert_case: InitCase, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["/usr/bin/python3", "-I"]
    probe = subprocess.run([*command, "-c", "import tlsleak"], capture_output=True, check=False)
    has_binding = subprocess.run(
        [*command, "-c", "import cryptography.hazmat.bindings.openssl.binding"],
        capture_output=True,
        check=False,
    )
    if probe.returncode == 0 or has_binding.returncode != 0:
        pytest.skip("the system Python has tlsleak, or lacks cryptography")
    into = _check_and_export(tmp_path, "control-leaky", bad_cert_case, capsys)
    argv = [
        *command,
        str(into / "reproduce.py"),
        "--rounds",
        str(ROUNDS),
        "--attempts",
        str(ATTEMPTS),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stdout + done.stderr  # it says it leaks
    assert _grows([r[3] for r in _rows(done.stdout)], ATTEMPTS * 1000), done.stdout


#: A user's own init path (pyOpenSSL), for the ``package.module:function`` template.
USER_MODULE = """
import warnings

from OpenSSL import SSL, crypto

warnings.simplefilter("ignore", DeprecationWarning)  # pyOpenSSL's X509 and PKey objects


def init(case):
    client = case.mode.value == "client"
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD if client else SSL.TLS_SERVER_METHOD)
    if case.cert:
        ctx.use_certificate(crypto.load_certificate(crypto.FILETYPE_PEM, case.cert))
    if case.key:
        ctx.use_privatekey(crypto.load_privatekey(crypto.FILETYPE_PEM, case.key))
"""


@pytest.mark.parametrize("target", ["pyopenssl", "ssl", "control-fixed", "userinit:init"])
def test_each_template_accepts_and_rejects_what_its_target_does(
    tmp_path: Path,
    target: str,
    valid_client_case: InitCase,
    bad_cert_case: InitCase,
    bad_key_case: InitCase,
    plain_python: Interpreter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scripts run the target's init path: same verdict per case, and no growth."""
    (tmp_path / "userinit.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)  # where the user's module imports, for tlsleak and the script
    made = resolve_target(target)
    for name, case in [
        ("valid", valid_client_case),
        ("cert", bad_cert_case),
        ("key", bad_key_case),
    ]:
        script = _export_made(tmp_path, target, case, name)
        # A long warm-up: once in a full suite run, the ssl template's third
        # round still showed ~45 B an attempt after 500 (caches filling slowly,
        # the increments shrinking), which the script's verdict called growth.
        # Likeliest cause: glibc's tcache, which mallinfo2 counts as in use;
        # the script now runs with it off, but that run was never reproduced
        # (0 of 30 runs at 500), so the warm-up stays.
        output = _run_script(
            plain_python, script, "--attempts", "100", "--warmup", "2000", cwd=tmp_path
        )
        _same_verdict(made.run(case).status, output, name)
        assert abs(_rows(output)[-1][3]) < 100_000, (name, output)


def _export_made(tmp_path: Path, target: str, case: InitCase, name: str) -> Path:
    """A finding folder made for ``case`` on ``target`` (no check run), exported: the script."""
    finding = Finding(FindingKind.LEAK, target, case, Outcome(Status.ACCEPTED), delta={"x": 1})
    folder, _ = FindingStore(tmp_path / "findings" / name).add(finding, case)
    export_finding(folder, tmp_path / name)
    return tmp_path / name / "reproduce.py"


def _same_verdict(status: Status, output: str, name: str) -> None:
    """The script accepted the case exactly when the target did."""
    assert ("outcome: accepted" in output) == (status is Status.ACCEPTED), (name, output)


# --- the real stacks ----------------------------------------------------------------
#
# Each stack script runs the target's init path on the stack's public API.
# Positive controls are the stacks' known leaks (docs/grpc.md, docs/mongoose.md);
# python-mbedtls's path has none (docs/mbedtls.md), so its positive control is
# a leak planted in the exported script.  Few attempts per round, but a warm-up
# past the stacks' one-off caches; the verdict judges growth after round 1.


def _stack_run(python: Interpreter, script: Path, *options: str, status: int) -> list[list[int]]:
    output = _run_script(python, script, *options, status=status)
    assert output.splitlines()[1].startswith("stack: "), output  # the version it ran on
    return _rows(output)


def test_the_exported_mongoose_script_loses_a_server_ca_bundle_and_not_one_certificate(
    tmp_path: Path, plain_python: Interpreter, capsys: pytest.CaptureFixture[str]
) -> None:
    """Mongoose's server keeps the first CA certificate's DER and loses the others."""
    pytest.importorskip("cymongoose")
    ident = identity(KeyType.EC_P256)
    server = InitCase(
        Mode.SERVER, cert=cert_bytes(ident.leaf), key=key_bytes(ident.key, KeyFormat.SEC1)
    )
    bundle = replace(server, ca=cert_bytes(ident.root) + cert_bytes(ident.chain[0]))
    into = _check_and_export(tmp_path / "bundle", "mongoose", bundle, capsys)
    options = ("--warmup", "300")
    rows = _stack_run(plain_python, into / "reproduce.py", *options, status=1)
    assert rows[-1][5] >= 16_000, rows  # heap per 1000 attempts: a lost DER buffer each
    made = resolve_target("mongoose")
    for name, case in [
        ("one", replace(server, ca=cert_bytes(ident.root))),
        ("key", replace(server, key=b"junk")),  # "EC private key: invalid ASN.1"
    ]:
        script = _export_made(tmp_path, "mongoose", case, name)
        output = _run_script(plain_python, script, *options, status=0)
        _same_verdict(made.run(case).status, output, name)


def test_the_exported_grpc_script_shows_a_refused_server_leak_and_no_client_leak(
    tmp_path: Path,
    bad_cert_case: InitCase,
    valid_client_case: InitCase,
    bad_key_case: InitCase,
    plain_python: Interpreter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A server whose add_secure_port refused the material is never freed (grpc/grpc#31509)."""
    pytest.importorskip("grpc")
    into = _check_and_export(tmp_path / "refused", "grpc", bad_cert_case, capsys)
    options = ("--warmup", "300")
    output = _run_script(plain_python, into / "reproduce.py", *options, status=1)
    assert "outcome: rejected: add_secure_port refused the credentials" in output
    assert _rows(output)[-1][5] > 1_000_000, output  # over a KB an attempt
    # Client mode is clean: a channel to a closed loopback port, accepted or not.
    made = resolve_target("grpc")
    client_key = replace(bad_key_case, mode=Mode.CLIENT)
    for name, case in [("client", valid_client_case), ("client-key", client_key)]:
        script = _export_made(tmp_path, "grpc", case, name)
        output = _run_script(plain_python, script, *options, status=0)
        _same_verdict(made.run(case).status, output, name)


def test_the_exported_grpc_script_shows_the_server_credentials_key_pair_array_leak(
    tmp_path: Path, valid_case: InitCase, plain_python: Interpreter
) -> None:
    """An accepted server loses ssl_server_credentials' 24-byte key-pair array, no more."""
    pytest.importorskip("grpc")
    script = _export_made(tmp_path, "grpc", valid_case, "accepted")
    # One 32-byte chunk an attempt: a round must be well above what is left
    # of a round's noise with glibc's tcache off (some 2 KB).
    options = ("--rounds", "4", "--attempts", "400", "--warmup", "300")
    command, env = plain_python
    done = subprocess.run(
        [*command, str(script), *options], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "outcome: accepted" in done.stdout
    verdict = done.stdout.splitlines()[-1]
    per_attempt = int(verdict.split("heap in use +")[1].split()[0])
    assert 16 <= per_attempt < 100, done.stdout  # about 32: the one block


def test_the_exported_mbedtls_script_matches_the_target_and_shows_a_planted_leak(
    tmp_path: Path,
    valid_case: InitCase,
    valid_client_case: InitCase,
    bad_cert_case: InitCase,
    bad_key_case: InitCase,
    plain_python: Interpreter,
) -> None:
    """python-mbedtls's path is clean; the same script keeping its contexts is not."""
    pytest.importorskip("mbedtls")
    made = resolve_target("mbedtls")
    options = ("--warmup", "200", "--attempts", "200")  # some ms an attempt, and flat
    for name, case in [
        ("server", valid_case),
        ("client", valid_client_case),
        ("cert", bad_cert_case),
        ("key", bad_key_case),
    ]:
        script = _export_made(tmp_path, "mbedtls", case, name)
        output = _run_script(plain_python, script, *options, status=0)
        _same_verdict(made.run(case).status, output, name)
        assert abs(_rows(output)[-1][3]) < 100_000, (name, output)
    # The planted leak: every ServerContext (its mbedtls_ssl_config) kept.
    script = tmp_path / "server" / "reproduce.py"
    made_context = '        raise Rejected(f"context: {exc}") from None\n'
    source = script.read_text()
    assert made_context in source
    planted = source.replace(made_context, made_context + "    KEPT.append(made.context)\n")
    script.write_text(planted.replace("\ndef init(case):", "\nKEPT = []\n\n\ndef init(case):"))
    rows = _stack_run(plain_python, script, *options, status=1)
    assert rows[-1][5] > 100_000, rows  # over 100 bytes an attempt


#: What a loopback address looks like in strace's lines (IPv4, IPv6, IPv4-mapped IPv6).
_TRACED_ADDRESS = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6?, "([^"]+)"')
_LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
@pytest.mark.parametrize("module", ["grpc", "cymongoose"])
@pytest.mark.parametrize("client", [False, True], ids=["server", "client"])
def test_the_stack_scripts_reach_nothing_but_loopback(
    tmp_path: Path,
    module: str,
    client: bool,
    valid_case: InitCase,
    valid_client_case: InitCase,
    plain_python: Interpreter,
) -> None:
    """Every address the script binds, connects or sends to (its stack's threads too) is loopback.

    The cases have a CA and verify: without the time set, Mongoose's
    mg_tls_init would ask time.google.com over SNTP (a DNS query to 8.8.8.8).
    """
    pytest.importorskip(module)
    # The parser sees what a DNS query would show (a line as strace prints it).
    dns = 'sendto(5, "x", 1, 0, {sa_family=AF_INET, sin_addr=inet_addr("8.8.8.8")}, 16) = 1'
    assert _TRACED_ADDRESS.findall(dns) == [("8.8.8.8", "")]
    target = "grpc" if module == "grpc" else "mongoose"
    script = _export_made(tmp_path, target, valid_client_case if client else valid_case, "x")
    trace, (command, env) = tmp_path / "trace", plain_python
    strace = ["strace", "-f", "-qq", "-e", "trace=bind,connect,sendto,sendmsg", "-o", str(trace)]
    options = ["--rounds", "1", "--attempts", "20", "--warmup", "5"]
    done = subprocess.run(
        [*strace, *command, str(script), *options], env=env, capture_output=True, timeout=300
    )
    if done.returncode != 0 and not trace.is_file():
        pytest.skip(f"strace cannot trace here: {done.stderr.decode(errors='replace')}")
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 1: a gRPC server leaks
    addresses = {a or b for a, b in _TRACED_ADDRESS.findall(trace.read_text())}
    assert addresses, "the script connected nowhere: the trace shows nothing"
    assert addresses <= _LOOPBACK, addresses


# --- the C driver ---------------------------------------------------------------------


def _build_driver(into: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    # The build command REPORT.md and the Makefile give, with warnings as errors.
    command = [gcc, "-O1", "-Wall", "-Werror", "-rdynamic", "-o", "reproduce", "reproduce.c"]
    subprocess.run([*command, "-ldl"], cwd=into, check=True, capture_output=True)
    return into / "reproduce"


def _run_driver(driver: Path, *args: str, status: int) -> str:
    """The driver's output; ``status`` is the exit status it must give (1: it says it leaks)."""
    argv = [str(driver), *args, str(ROUNDS), str(ATTEMPTS)] if args else [str(driver)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == status, done.stdout + done.stderr
    return done.stdout


def test_the_exported_c_driver_shows_the_leaky_control_and_not_the_fixed_one(
    tmp_path: Path,
    bad_cert_case: InitCase,
    c_controls: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    leaky = c_controls["leaky"]
    into = _check_and_export(tmp_path, f"c:{leaky}", bad_cert_case, capsys)
    assert f'"{leaky}"' in (into / "reproduce.c").read_text()  # the default library
    assert "-rdynamic -o reproduce reproduce.c -ldl" in (into / "REPORT.md").read_text()
    driver = _build_driver(into)
    output = _run_driver(driver, str(leaky), status=1)
    assert "outcome: returned 1: certificate: cannot parse certificate" in output
    rows = _rows(output)
    assert _grows([r[2] for r in rows], ATTEMPTS * 1000), output  # mallinfo2 bytes in use
    assert _grows([r[3] for r in rows], ATTEMPTS * 10), output  # live malloc blocks
    fixed = _rows(_run_driver(driver, str(c_controls["fixed"]), status=0))
    assert abs(fixed[-1][2]) < 100_000
    assert abs(fixed[-1][3]) < 100
    # With no argument it loads the library the finding was made in.
    assert _grows([r[3] for r in _rows(_run_driver(driver, "", status=1))], ATTEMPTS * 10)


def test_the_c_driver_fails_the_allocation_an_allocation_failure_finding_needs(
    tmp_path: Path, c_controls: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """control_sslnew.c leaks only when SSL_new runs out of memory: the driver makes it."""
    write_case(tmp_path / "cases", InitCase())
    out = str(tmp_path / "out")
    argv = ["check", f"c:{c_controls['sslnew']}", str(tmp_path / "cases"), "--fail-alloc"]
    assert main([*argv, "--out", out, "--minimize-budget", "0"]) == 1
    capsys.readouterr()
    (folder,) = (tmp_path / "out" / "findings").iterdir()
    into = tmp_path / "export"
    assert main(["export", str(folder), "--into", str(into)]) == 0
    assert "The driver does that itself" in (into / "REPORT.md").read_text()
    driver = _build_driver(into)
    output = _run_driver(driver, "", status=1)
    assert "outcome: returned 1: connection: SSL_new failed" in output
    assert _grows([r[3] for r in _rows(output)], ATTEMPTS * 10), output
    # The fixed control frees the context on that path: the same failure, no growth.
    fixed = _run_driver(driver, str(c_controls["fixed"]), status=0)
    assert "SSL_new failed" in fixed
    assert abs(_rows(fixed)[-1][3]) < 100


# --- bad input ------------------------------------------------------------------------


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("tlsleak: error: "), err
    return err


def test_bad_input_is_one_line_and_exit_status_2(
    tmp_path: Path, bad_cert_case: InitCase, capsys: pytest.CaptureFixture[str]
) -> None:
    into = _check_and_export(tmp_path, "control-leaky", bad_cert_case, capsys)
    (folder,) = (tmp_path / "out" / "findings").iterdir()
    other = str(tmp_path / "other")
    assert "not a finding folder" in _one_line_error(
        capsys, ["export", str(tmp_path), "--into", other]
    )
    missing = str(tmp_path / "missing")
    assert "no such folder" in _one_line_error(capsys, ["export", missing, "--into", other])
    assert "not empty" in _one_line_error(capsys, ["export", str(folder), "--into", str(into)])
    (tmp_path / "file").write_text("x")
    bad_dir = str(tmp_path / "file" / "export")
    assert "cannot write" in _one_line_error(capsys, ["export", str(folder), "--into", bad_dir])
    data = json.loads((folder / "finding.json").read_text())
    (folder / "finding.json").write_text(json.dumps({**data, "target": "wolfssl"}))
    refused = _one_line_error(capsys, ["export", str(folder), "--into", other])
    assert "no standalone template for target 'wolfssl'" in refused
    (folder / "finding.json").write_text("{not json")
    assert "not valid JSON" in _one_line_error(capsys, ["export", str(folder), "--into", other])
    assert "--into" in _one_line_error(capsys, ["export", str(folder)])
    assert not Path(other).exists()
