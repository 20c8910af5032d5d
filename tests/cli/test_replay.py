"""tlsleak replay: replay is what check did, from any folder, with three distinct results.

These go through the command line, so the heap ledger runs for real in a worker
started with the shim preloaded, and allocation numbering is the real one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.cases.files import write_case
from tlsleak.cli import main

CCompiler = Callable[..., Path]

C_DIR = Path(__file__).resolve().parents[1] / "c"

#: A build of a control with one extra allocation per call: the allocation
#: numbering of every run moves by one, as after a change to the library.
SHIFTED = """
#define tls_init_once tls_init_once_inner
#include "{source}"
#undef tls_init_once
CONTROL_EXPORT int tls_init_once(const unsigned char *ca, size_t ca_len,
                                 const unsigned char *cert, size_t cert_len,
                                 const unsigned char *key, size_t key_len, int is_client) {{
    OPENSSL_free(OPENSSL_malloc(16));
    return tls_init_once_inner(ca, ca_len, cert, cert_len, key, key_len, is_client);
}}
"""


def _shifted(c_compiler, tmp_path: Path, source: str, name: str) -> Path:
    wrapper = tmp_path / f"{name}.c"
    wrapper.write_text(SHIFTED.format(source=C_DIR / source))
    built: Path = c_compiler(wrapper, tmp_path / f"{name}.so", f"-I{C_DIR}")
    return built


def _folders(out: Path) -> list[Path]:
    return sorted(p for p in (out / "findings").iterdir() if p.is_dir())


def _json(folder: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((folder / "finding.json").read_text())
    return data


def _edit(folder: Path, **changes: object) -> None:
    data = _json(folder)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    (folder / "finding.json").write_text(json.dumps(data))


@pytest.fixture
def sslnew_finding(
    c_controls: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Path:
    """A --fail-alloc leak folder of control_sslnew.c, checked as a *relative* c:lib.so."""
    work = tmp_path / "work"
    (work / "cases").mkdir(parents=True)
    shutil.copy(c_controls["sslnew"], work / "lib.so")
    write_case(work / "cases", InitCase())
    monkeypatch.chdir(work)
    argv = ["check", "c:lib.so", "cases", "--fail-alloc", "--out", "out"]
    assert main([*argv, "--minimize-budget", "0"]) == 1
    capsys.readouterr()
    (folder,) = [f for f in _folders(work / "out") if f.name.startswith("leak-")]
    monkeypatch.chdir(tmp_path)  # replay from elsewhere
    return folder


def test_every_fail_alloc_folder_replays_from_another_folder(
    c_controls: dict[str, Path],
    small_corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The SSL_new leak, and the error-queue findings of failures in teardown:
    # whatever check stored, replay must find again (it used to call most of
    # them gone, replaying in a process that had not warmed up).
    write_case(small_corpus, InitCase())
    shutil.copy(c_controls["sslnew"], tmp_path / "lib.so")
    monkeypatch.chdir(tmp_path)
    argv = ["check", "c:lib.so", str(small_corpus), "--fail-alloc", "--out", "out"]
    assert main([*argv, "--minimize-budget", "10"]) == 1
    folders = _folders(tmp_path / "out")
    assert any(f.name.startswith("leak-") for f in folders)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    for folder in folders:
        data = _json(folder)
        assert data["fail_at"] is not None
        assert data["fail_point"]["fail_at"] == data["fail_at"]  # type: ignore[index]
        assert main(["replay", str(folder)]) == 1, folder.name
        assert "still there" in capsys.readouterr().out


def test_python_control_fail_alloc_folders_replay(
    tmp_path: Path, valid_case: InitCase, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "cases"
    write_case(folder, valid_case)
    out = tmp_path / "out"
    assert main(["check", "control-leaky", str(folder), "--fail-alloc", "--out", str(out)]) == 1
    capsys.readouterr()
    for stored in _folders(out):
        assert main(["replay", str(stored)]) == 1, stored.name


def test_folder_stores_the_library_by_absolute_path_and_sha256(
    sslnew_finding: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _json(sslnew_finding)
    assert data["target"] == "c:lib.so"  # the name as given: signatures stay the same
    library = data["library"]
    assert isinstance(library, dict)
    assert library["path"] == str((tmp_path / "work" / "lib.so").resolve())
    assert len(library["sha256"]) == 64
    point = data["fail_point"]
    assert isinstance(point, dict)
    assert 0 < point["fail_at"] <= point["warmup_allocations"]
    assert main(["replay", str(sslnew_finding)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"target: c:{library['path']} (")  # says what it loads, first
    assert f"warm-up of {point['warmup_allocations']} allocations" in out


def test_a_fix_is_gone_with_a_warning_that_the_library_changed(
    sslnew_finding: Path, c_controls: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    library = Path(_json(sslnew_finding)["library"]["path"])  # type: ignore[index]
    shutil.copy(c_controls["fixed"], library)  # the fix: same allocations, no leak
    assert main(["replay", str(sslnew_finding)]) == 0
    captured = capsys.readouterr()
    assert "gone" in captured.out
    (warning,) = captured.err.splitlines()
    assert "is not the build the finding came from" in warning


def test_a_library_that_is_gone_is_exit_2(
    sslnew_finding: Path, c_controls: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    Path(_json(sslnew_finding)["library"]["path"]).unlink()  # type: ignore[index]
    assert main(["replay", str(sslnew_finding)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "is gone" in line
    assert "--target c:PATH" in line
    # Told where the library is now, it replays.
    assert main(["replay", str(sslnew_finding), "--target", f"c:{c_controls['sslnew']}"]) == 1


def test_a_changed_numbering_that_loses_the_finding_cannot_be_gone(
    sslnew_finding: Path, c_compiler: CCompiler, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Fixed, and one more allocation per run: the warm-up counts differently,
    # so allocation k is another allocation and its silence proves nothing.
    shifted = _shifted(c_compiler, tmp_path, "control_fixed.c", "fixed_shifted")
    library = Path(_json(sslnew_finding)["library"]["path"])  # type: ignore[index]
    shutil.copy(shifted, library)
    assert main(["replay", str(sslnew_finding)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2  # the rebuilt-library warning, then the verdict
    assert "cannot reproduce exactly" in err[1]
    assert "warm-up run made" in err[1]
    assert "--fail-alloc" in err[1]


def test_a_changed_numbering_that_still_shows_the_bug_is_still_there(
    sslnew_finding: Path, c_compiler: CCompiler, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shifted = _shifted(c_compiler, tmp_path, "control_sslnew.c", "sslnew_shifted")
    library = Path(_json(sslnew_finding)["library"]["path"])  # type: ignore[index]
    shutil.copy(shifted, library)
    assert main(["replay", str(sslnew_finding)]) == 1
    assert "still there" in capsys.readouterr().out


def test_a_tail_point_is_found_again_by_its_distance_from_the_end(
    sslnew_finding: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As if found where ten more allocations came first: the stored number
    # is off by ten, the distance from the end is not.
    point = _json(sslnew_finding)["fail_point"]
    assert isinstance(point, dict)
    moved = {key: point[key] + 10 for key in ("fail_at", "warmup_allocations")}
    _edit(sslnew_finding, fail_point=moved, fail_at=moved["fail_at"])
    assert main(["replay", str(sslnew_finding)]) == 1
    out = capsys.readouterr().out
    assert f"failed allocation {point['fail_at']}" in out


def test_a_folder_without_a_warm_up_count_is_never_called_gone(
    sslnew_finding: Path, c_controls: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _edit(sslnew_finding, fail_point=None)  # as stored by earlier versions
    assert main(["replay", str(sslnew_finding)]) == 1
    library = Path(_json(sslnew_finding)["library"]["path"])  # type: ignore[index]
    shutil.copy(c_controls["fixed"], library)
    capsys.readouterr()
    assert main(["replay", str(sslnew_finding)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "cannot reproduce exactly" in err[-1]
    assert "without the warm-up count" in err[-1]


@pytest.mark.parametrize(
    "target", ["../evil.so", "/tmp/evil.py", "os.system", "pkg.mod:fn; rm -rf ~"]
)
def test_a_folder_naming_no_known_kind_of_target_is_refused(
    target: str,
    small_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    main(["check", "control-leaky", str(small_corpus), "--out", str(out), "--minimize-budget", "0"])
    folder = _folders(out)[0]
    _edit(folder, target=target)
    capsys.readouterr()
    status = main(["replay", str(folder)])
    err = capsys.readouterr().err
    assert status == 2
    assert len(err.splitlines()) == 1
    assert "is not a built-in target, a c: library or a package.module:function" in err
    assert "--target SPEC" in err
    # Named again by the user, the target is theirs to trust.
    assert main(["replay", str(folder), "--target", "control-leaky"]) == 1
    assert "given with --target" in capsys.readouterr().out


def test_a_module_path_target_is_named_before_it_is_imported(
    small_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    main(["check", "control-leaky", str(small_corpus), "--out", str(out), "--minimize-budget", "0"])
    folder = _folders(out)[0]
    _edit(folder, target="tlsleak_no_such_module_xyz:init")
    capsys.readouterr()
    assert main(["replay", str(folder)]) == 2  # cannot import it: one line
    captured = capsys.readouterr()
    assert captured.out.startswith("target: tlsleak_no_such_module_xyz:init (")
    assert "imports it" in captured.out
    assert "cannot import" in captured.err


def test_a_reproducer_that_gives_another_finding_is_never_called_gone(
    tmp_path: Path, valid_case: InitCase, capsys: pytest.CaptureFixture[str]
) -> None:
    # A leak folder of the leaky control, then the same folder saying it was
    # a cycle (as a noisy first run once judged gRPC's leak): replay finds the
    # leak, which is not the stored finding, but neither is it gone.
    cases, out = tmp_path / "cases", tmp_path / "out"
    cases.mkdir()
    write_case(cases, replace(valid_case, key=b"not a key"))  # the control leaks on failure
    assert main(["check", "control-leaky", str(cases), "--out", str(out)]) == 1
    capsys.readouterr()
    (folder,) = [f for f in _folders(out) if f.name.startswith("leak-")]
    assert main(["replay", str(folder)]) == 1  # negative control: as stored, still there
    assert "still there" in capsys.readouterr().out
    _edit(folder, kind="cycle")
    assert main(["replay", str(folder)]) == 2
    captured = capsys.readouterr()
    assert "gone" not in captured.out
    (line,) = captured.err.splitlines()
    assert "cannot reproduce exactly" in line
    assert "now gives control-leaky | leak" in line
