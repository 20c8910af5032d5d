"""Fuzz workers run off the network, and a campaign says when they could not.

The target of the first campaign fails every input (an ``exception``
finding) unless, from inside the worker, loopback is the only network
interface it can see and a loopback round trip works; it touches no other
address (see ``tests/test_netns.py`` for the controls of that probe).
The second campaign forces ``unshare`` to fail in its workers (a
``sitecustomize`` on their PYTHONPATH) and must say so at start-up, in the
summary and in ``stats.jsonl``.  Both campaigns end on libFuzzer's ``-runs``,
not on a clock.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tlsleak._netns import ENV, Network
from tlsleak.cases.case import InitCase
from tlsleak.cases.files import write_case
from tlsleak.cli import main
from tlsleak.fuzz.campaign import Campaign, CampaignOptions

pytest.importorskip("atheris", reason="campaigns need atheris")

TARGETS = '''
import socket


def outside():
    """The network interfaces this process can see, "+"-joined: "lo" alone when isolated."""
    return "+".join(sorted(name for _index, name in socket.if_nameindex()))


def loopback():
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname(), timeout=10) as client:
            peer, _ = server.accept()
            with peer:
                client.sendall(b"x")
                peer.sendall(peer.recv(1))
                return client.recv(1) == b"x"


def strict(case):
    """Fails unless loopback is all there is, and works."""
    reached = outside()
    if reached != "lo":
        raise RuntimeError(f"outside: {reached}")
    if not loopback():
        raise RuntimeError("loopback: lost")


def local(case):
    """Loopback only: runs the same with or without isolation."""
    if not loopback():
        raise RuntimeError("loopback: lost")
'''

REFUSE_UNSHARE = """
import errno
from tlsleak import _netns as netns

def _refused(flags):
    raise OSError(errno.EPERM, "Operation not permitted")

netns._unshare = _refused
"""

NOT_ISOLATED = "network: not isolated (unshare: Operation not permitted)"


@pytest.fixture
def targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "tlsleak_netns_fuzz.py").write_text(textwrap.dedent(TARGETS))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.delenv(ENV, raising=False)
    return "tlsleak_netns_fuzz"


def _corpus(folder: Path) -> Path:
    write_case(folder, InitCase())
    write_case(folder, InitCase(cert=b"x"))
    return folder


def test_campaign_workers_cannot_reach_the_network_and_loopback_works(
    tmp_path: Path, targets: str
) -> None:
    options = CampaignOptions(
        f"{targets}:strict",
        tmp_path / "out",
        corpus=_corpus(tmp_path / "corpus"),
        minimize_budget=0,
        libfuzzer_flags=("-runs=30",),
    )
    messages: list[str] = []
    status = Campaign(options, on_message=messages.append).run()
    assert status.execs > 0
    assert status.findings == [], [f.summary for f in status.findings]
    assert status.network is not None
    assert status.network.isolated, status.network
    assert not [m for m in messages if m.startswith("network:")]
    last = json.loads((tmp_path / "out" / "stats.jsonl").read_text().splitlines()[-1])
    assert last["network"]["isolated"] is True


def test_a_campaign_whose_workers_cannot_isolate_says_so(
    tmp_path: Path, targets: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sitecustomize.py").write_text(REFUSE_UNSHARE)
    out = tmp_path / "out"
    argv = ["fuzz", f"{targets}:local", "--out", str(out), "--corpus", str(tmp_path / "c")]
    _corpus(tmp_path / "c")
    assert main([*argv, "-q", "--minimize-budget", "0", "--", "-runs=10"]) == 0
    said = capsys.readouterr()
    # Once at start-up (when the first worker is ready), once after the summary.
    assert said.err.count(NOT_ISOLATED) == 1, said.err
    assert said.out.count(NOT_ISOLATED) == 1, said.out
    last = json.loads((out / "stats.jsonl").read_text().splitlines()[-1])
    assert Network.from_json(last["network"]) == Network(
        False, reason="unshare: Operation not permitted"
    )
