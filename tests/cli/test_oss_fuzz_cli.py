"""``tlsleak oss-fuzz``: the kit's files are what ClusterFuzzLite and OSS-Fuzz read.

What is checked here is the files (the shell script parses, the YAML says
``language: python``, the zip holds the bundled corpus and nothing else, the
workflows use ClusterFuzzLite's actions in both modes) and the refusals (one
line, exit status 2, nothing written).  That the fuzzer script fuzzes, finds
the planted leak and passes the fixed control, under libFuzzer's own command
lines, is tests/fuzz/test_oss_fuzz.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tlsleak.cases.files import bundled_corpus, case_files
from tlsleak.cli import main
from tlsleak.reports.oss_fuzz import plan, render

FUZZER = "tlsleak_control_leaky_fuzzer"


def _kit(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Path:
    into = tmp_path / "kit"
    assert main(["oss-fuzz", "control-leaky", "--into", str(into), *args]) == 0
    out = capsys.readouterr().out
    assert FUZZER in out
    return into


def _yaml(text: str) -> Any:
    """Parsed with PyYAML where installed; else the flat ``key: value`` lines."""
    try:
        import yaml
    except ImportError:
        pairs = {}
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, sep, value = line.partition(":")
                assert sep, f"not a YAML mapping line: {line!r}"
                pairs[key.strip()] = value.strip()
        return pairs
    return yaml.safe_load(text)


def test_the_kit_holds_every_file_clusterfuzzlite_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    into = _kit(tmp_path, capsys, "--project", "myproj")
    found = sorted(str(p.relative_to(into)) for p in into.rglob("*") if p.is_file())
    assert found == sorted(
        [
            ".clusterfuzzlite/project.yaml",
            ".clusterfuzzlite/Dockerfile",
            ".clusterfuzzlite/build.sh",
            f".clusterfuzzlite/{FUZZER}.py",
            f".clusterfuzzlite/{FUZZER}_seed_corpus.zip",
            f".clusterfuzzlite/{FUZZER}.dict",
            ".github/workflows/cflite_pr.yml",
            ".github/workflows/cflite_batch.yml",
        ]
    )
    # Written like an export: a private folder, private files.
    for path in [into, *into.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), path
    kit = into / ".clusterfuzzlite"
    assert _yaml((kit / "project.yaml").read_text())["language"] == "python"
    dockerfile = (kit / "Dockerfile").read_text().splitlines()
    assert "FROM gcr.io/oss-fuzz-base/base-builder-python" in dockerfile
    assert any(line.startswith("RUN pip3 install tlsleak==") for line in dockerfile)
    assert "COPY . $SRC/myproj" in dockerfile
    assert "COPY .clusterfuzzlite/build.sh $SRC/" in dockerfile
    build = (kit / "build.sh").read_text()
    assert f"compile_python_fuzzer .clusterfuzzlite/{FUZZER}.py --collect-all tlsleak \\\n" in build
    assert "--exclude-module tlsleak.pytest_plugin" in build
    assert 'cd "$SRC/myproj"' in build
    assert f"{FUZZER}_seed_corpus.zip" in build
    assert f"{FUZZER}.dict" in build
    fuzzer = (kit / f"{FUZZER}.py").read_text()
    assert 'os.environ["TLSLEAK_TARGET"] = "control-leaky"' in fuzzer
    assert "from tlsleak.fuzz.entry import main" in fuzzer


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_build_sh_is_valid_bash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    into = _kit(tmp_path, capsys)
    proc = subprocess.run(
        ["bash", "-n", str(into / ".clusterfuzzlite/build.sh")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_the_seed_corpus_zip_is_the_bundled_corpus_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    into = _kit(tmp_path, capsys)
    bundled = {p.name: p.read_bytes() for p in case_files([bundled_corpus()])}
    assert len(bundled) > 100  # the real corpus, not an empty stand-in
    with zipfile.ZipFile(into / f".clusterfuzzlite/{FUZZER}_seed_corpus.zip") as archive:
        # At the root: OSS-Fuzz unpacks it into the fuzzer's corpus folder.
        zipped = {name: archive.read(name) for name in archive.namelist()}
    assert zipped == bundled


def test_the_dictionary_is_tlsleaks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    into = _kit(tmp_path, capsys)
    shipped = Path(__file__).resolve().parents[2] / "src/tlsleak/fuzz/tls.dict"
    assert (into / f".clusterfuzzlite/{FUZZER}.dict").read_bytes() == shipped.read_bytes()


def test_the_workflows_build_and_run_python_fuzzers_on_prs_and_in_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    into = _kit(tmp_path, capsys)
    modes = {}
    for name in ("cflite_pr.yml", "cflite_batch.yml"):
        text = (into / ".github/workflows" / name).read_text()
        assert "\t" not in text  # YAML forbids tabs for indentation
        try:
            import yaml
        except ImportError:
            lines = [line.strip() for line in text.splitlines()]
            assert "uses: google/clusterfuzzlite/actions/build_fuzzers@v1" in lines
            assert "uses: google/clusterfuzzlite/actions/run_fuzzers@v1" in lines
            assert "language: python" in lines
            [mode] = [line.split(":", 1)[1].strip() for line in lines if line.startswith("mode:")]
        else:
            [job] = yaml.safe_load(text)["jobs"].values()
            build, run = job["steps"]
            assert build["uses"] == "google/clusterfuzzlite/actions/build_fuzzers@v1"
            assert build["with"]["language"] == "python"
            assert run["uses"] == "google/clusterfuzzlite/actions/run_fuzzers@v1"
            mode = run["with"]["mode"]
        modes[name] = mode
    assert modes == {"cflite_pr.yml": "code-change", "cflite_batch.yml": "batch"}


def test_a_callable_target_is_named_to_pyinstaller() -> None:
    # tlsleak imports the callable's module by name, which PyInstaller cannot see.
    kit = plan("mypkg.tls:make_context", "proj")
    assert kit.fuzzer == "tlsleak_mypkg_tls_make_context_fuzzer"
    build = render(kit)[".clusterfuzzlite/build.sh"].decode()
    assert "--exclude-module _pytest --collect-all mypkg --hidden-import mypkg.tls\n" in build
    assert "resolve_target(sys.argv[1])' \\\n  mypkg.tls:make_context" in build


def test_the_project_defaults_to_the_current_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my repo").mkdir()
    monkeypatch.chdir(tmp_path / "my repo")
    into = _kit(tmp_path, capsys)
    assert "COPY . $SRC/my-repo" in (into / ".clusterfuzzlite/Dockerfile").read_text()


# --- refusals: one line, exit status 2, nothing written --------------------------


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("no-such-target", "unknown target 'no-such-target'"),
        ("not a:spec!", "unknown target 'not a:spec!'"),
        ("c:/some/lib.so", "a c: library is not supported"),
        # Seen by the heap ledgers only, which need a preloaded library (tests/fuzz/).
        ("ssl", "ssl: its ledgers need tlsleak's heap library preloaded"),
        ("grpc", "grpc: its ledgers need tlsleak's heap library preloaded"),
    ],
)
def test_a_bad_target_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, said: str
) -> None:
    into = tmp_path / "kit"
    assert main(["oss-fuzz", target, "--into", str(into)]) == 2
    err = capsys.readouterr().err
    assert said in err
    assert err.count("\n") == 1
    assert not into.exists()


def test_a_folder_that_is_not_empty_is_refused_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    into = tmp_path / "repo"
    into.mkdir()
    (into / "setup.py").write_text("mine")
    assert main(["oss-fuzz", "control-leaky", "--into", str(into)]) == 2
    err = capsys.readouterr().err
    assert "exists and is not empty" in err
    assert err.count("\n") == 1
    assert os.listdir(into) == ["setup.py"]
    assert (into / "setup.py").read_text() == "mine"


def test_an_empty_folder_is_taken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "kit").mkdir()
    into = _kit(tmp_path, capsys)
    assert (into / ".clusterfuzzlite/build.sh").is_file()


def test_a_file_in_the_way_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    into = tmp_path / "kit"
    into.write_text("mine")
    assert main(["oss-fuzz", "control-leaky", "--into", str(into)]) == 2
    err = capsys.readouterr().err
    assert "exists and is not a folder" in err
    assert into.read_text() == "mine"
