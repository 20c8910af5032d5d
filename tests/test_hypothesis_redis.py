"""The shared example database of docs/hypothesis.md, against a real ``redis-server``.

The docs' ``conftest.py`` block runs as written in separate pytest processes
("CI machines"), each in a folder of its own so that nothing is shared but
Redis.  Their property runs the planted leak (``control-leaky``) or, once
``FIXED`` is set, the same init path done right (``control-fixed``), and
appends every case it is given to a file: the first line of that file is the
machine's first example.

``redis-server`` (Debian package ``redis-server``) and the ``redis`` client
(the ``test`` extra) must be installed.  Without them the test is skipped
with the reason, except under ``CI``, where it fails: .ci/run installs the
server, so a skip there would hide a broken install step.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs" / "hypothesis.md"

# The property every machine runs.  Same source everywhere, so the same
# database key; EC P-256 only, so that no machine spends its time on RSA keys.
_PROPERTY = """
import os

from hypothesis import given, settings

from tlsleak import InitCase, assert_no_leaks
from tlsleak.strategies import init_cases
from tlsleak.targets import resolve_target

TARGET = resolve_target("control-fixed" if os.environ.get("FIXED") else "control-leaky")


@settings(max_examples=25)
@given(init_cases(key_types=["ec-p256"]))
def test_init_keeps_every_count_at_baseline(case: InitCase) -> None:
    with open(os.environ["EXAMPLES_LOG"], "a") as log:
        log.write(case.encode().hex() + "\\n")
    assert_no_leaks(TARGET, case)
"""



def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; under CI this is a failure: .ci/run installs it")
    pytest.skip(f"{reason} (a failure, not a skip, when CI is set)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RedisServer:
    url: str
    client: Any  # redis.Redis

    def contents(self) -> dict[bytes, set[bytes]]:
        """Every key and its members: what the machines shared."""
        return {key: self.client.smembers(key) for key in self.client.keys(b"*")}


def _start(binary: str, folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    import redis

    # A port free now may be taken before the server binds it: try again.
    for _ in range(5):
        port = _free_port()
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(folder), "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=port, socket_timeout=10)
        deadline = time.monotonic() + 60
        while server.poll() is None and time.monotonic() < deadline:
            try:
                client.ping()
                return server, port
            except redis.ConnectionError:
                time.sleep(0.05)
        server.kill()
        server.wait()
    pytest.fail("redis-server did not start on a free port of 127.0.0.1 in 5 tries")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable("redis-server is not installed (Debian: apt-get install redis-server)")
    try:
        import redis
    except ImportError:
        _unavailable("the redis client is not installed (pip install 'hypothesis[redis]')")
    assert binary is not None
    folder = tmp_path / "redis"
    folder.mkdir()
    server, port = _start(binary, folder)
    try:
        yield RedisServer(f"redis://127.0.0.1:{port}/0", redis.Redis(port=port))
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _conftest() -> str:
    """The docs' conftest block, as a user would copy it."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    return next(b for b in blocks if "RedisExampleDatabase" in b)


def _fork_acl() -> list[str]:
    """The rules of the docs' read-only Redis user for fork jobs."""
    match = re.search(r"^\s*ACL SETUSER fork on >PASSWORD (.+)$", DOCS.read_text(), re.M)
    assert match, "docs/hypothesis.md lost its ACL for fork jobs"
    return match[1].split()


def _machine(root: Path, name: str, **env: str) -> tuple[int, list[str]]:
    """Run the property as one CI machine; its exit status and the cases it ran, in order."""
    folder = root / name
    folder.mkdir()
    (folder / "conftest.py").write_text(_conftest())
    (folder / "test_shared.py").write_text(_PROPERTY)
    log = folder / "examples.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EXAMPLES_", "FIXED"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_shared.py"],
        cwd=folder,
        env={**clean, "EXAMPLES_LOG": str(log), **env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode, log.read_text().split()


def test_a_failure_one_machine_finds_is_the_first_example_of_the_next(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    shared = {"EXAMPLES_REDIS_URL": redis_server.url}

    # Machine 1 finds the leak and shrinks it: its last run is the shrunk case.
    status, first_run = _machine(tmp_path, "machine-1", **shared)
    assert status == 1
    failing = first_run[-1]
    stored = redis_server.contents()
    assert stored, "nothing was saved to Redis"

    # Machine 2, an empty folder of its own: the shared failure comes first.
    status, second_run = _machine(tmp_path, "machine-2", **shared)
    assert status == 1
    assert second_run[0] == failing

    # Negative control: without the shared database it starts elsewhere
    # (Hypothesis's simplest case, a valid one that passes).
    status, alone = _machine(tmp_path, "machine-3")
    assert status == 1
    assert alone[0] != failing

    # A fork PR with the fix, read-only and as a Redis user that may only read
    # (the docs' ACL): it replays the failure first and leaves Redis as it was.
    acl = ("ACL", "SETUSER", "fork", "on", ">fork-pw", *_fork_acl())
    redis_server.client.execute_command(*acl)
    before = redis_server.contents()
    fork_url = redis_server.url.replace("redis://", "redis://fork:fork-pw@")
    status, fork_run = _machine(
        tmp_path, "machine-4", EXAMPLES_REDIS_URL=fork_url, EXAMPLES_REDIS_READ_ONLY="1", FIXED="1"
    )
    assert status == 0
    assert fork_run[0] == failing
    assert redis_server.contents() == before

    # Negative control for read-only: the fix landed on a writing machine,
    # which replays entries, finds they pass, and deletes them for everyone.
    # (Not all: the larger failing examples met while shrinking are kept
    # under a secondary key, of which a run replays only a few.)
    status, fixed_run = _machine(tmp_path, "machine-5", FIXED="1", **shared)
    assert status == 0
    assert fixed_run[0] == failing
    assert _members(redis_server.contents()) < _members(before)


def _members(contents: dict[bytes, set[bytes]]) -> set[bytes]:
    return {member for members in contents.values() for member in members}
