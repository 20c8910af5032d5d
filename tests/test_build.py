"""Installing tlsleak: a C compiler is optional, OpenSSL's headers are never needed.

The build hook (hatch_build.py) compiles the two preloaded libraries; without
a compiler the wheel still builds (``py3-none-any``, no libraries) and the
tool runs with the ledgers that need none.  With one, the wheel is tagged for
the platform but not for a CPython (the libraries are not extensions).  The
wheels are built the way pip builds a checkout, without build isolation so
that no package index is reached.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The hook is a file at the top of the checkout, not a module of the package
# (it needs hatchling, which the test extra installs).
_spec = importlib.util.spec_from_file_location("hatch_build", ROOT / "hatch_build.py")
assert _spec is not None
assert _spec.loader is not None
hatch_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hatch_build)
NATIVE = "tlsleak/ledgers/_native/"


def _wheel(tmp_path: Path, **env: str) -> Path:
    out = tmp_path / "wheels"
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", *offline, "-w", str(out), str(ROOT)],
        check=True,
        env={**os.environ, **env},
        capture_output=True,
        timeout=600,
    )
    (wheel,) = out.glob("tlsleak-*.whl")
    return wheel


def test_a_missing_compiler_is_a_warning_and_leaves_no_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CC", "tlsleak-no-such-cc")
    out = tmp_path / "libtlsleak_heap.so"
    out.write_bytes(b"stale")
    assert not hatch_build.compile_optional(ROOT, out, interposer=False)
    assert not out.exists()  # never a stale library
    err = capsys.readouterr().err
    assert "no C compiler" in err
    assert "openssl-heap ledger will be unavailable" in err


def test_the_shim_builds_without_openssl_headers(tmp_path: Path) -> None:
    # No include path, no -lcrypto: it finds libcrypto when it is loaded.
    out = tmp_path / "libtlsleak_heap.so"
    assert hatch_build.compile_optional(ROOT, out, interposer=False)
    assert "-lcrypto" not in hatch_build.LIBS
    needed = subprocess.run(["ldd", str(out)], capture_output=True, text=True).stdout
    assert "libcrypto" not in needed


def test_a_wheel_with_the_libraries_is_for_any_python_3_on_this_platform(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path)
    assert wheel.name.endswith(f"-py3-none-{hatch_build._platform_tag()}.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert f"{NATIVE}libtlsleak_heap.so" in names
    assert f"{NATIVE}libtlsleak_malloc.so" in names


def test_without_a_compiler_the_install_works_and_finds_the_planted_leak(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, CC="tlsleak-no-such-cc")
    assert wheel.name.endswith("-py3-none-any.whl")
    assert not [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".so")]
    # A fresh venv that sees this environment's dependencies (not its tlsleak).
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with zipfile.ZipFile(wheel) as unpacked:
        unpacked.extractall(site)
    deps = {str(Path(p)) for p in sys.path if p.endswith("site-packages")}
    (Path(site) / "deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    run = subprocess.run(
        [str(python), "-m", "tlsleak.cli", "check", "control-leaky", "-q"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert run.returncode == 1, run.stderr
    assert "SSL_CTX" in run.stdout
    assert "Traceback" not in run.stderr
    where = subprocess.run(
        [str(python), "-c", "import tlsleak; print(tlsleak.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    ).stdout
    assert where.startswith(site)  # the wheel's tlsleak, not the checkout's
