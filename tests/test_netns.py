"""Workers off the network: a namespace with only loopback, and a report that says when not.

The probe target lists the network interfaces it can see, and touches no
address but loopback (tests never use another address, not even to look a
route up).  In a worker's namespace it sees ``lo`` alone (positive control);
in this test process, on a host with a network, it sees more (negative
control).  A loopback server and
client in the worker must still talk.  The "not isolated" path is forced by a
``sitecustomize`` that makes the worker's ``unshare`` fail with EPERM.
:func:`isolate` itself only ever runs in child processes: it would move the
test run off the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from tlsleak._netns import ENV, Network
from tlsleak.cases.case import InitCase
from tlsleak.cases.files import write_case
from tlsleak.check.worker import IsolatedOracle
from tlsleak.cli import main
from tlsleak.reports import json_report, text
from tlsleak.targets.base import Status

PROBE = '''
import socket

from tlsleak import Rejected

def outside():
    """The network interfaces this process can see, "+"-joined: "lo" alone when isolated."""
    return "+".join(sorted(name for _index, name in socket.if_nameindex()))


def loopback():
    """A server on 127.0.0.1:0 and a client: "echoed" when a byte makes the round trip."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname(), timeout=10) as client:
            peer, _ = server.accept()
            with peer:
                client.sendall(b"x")
                peer.sendall(peer.recv(1))
                return "echoed" if client.recv(1) == b"x" else "lost"


def init(case):
    """Says (as a rejection message) what the network looked like from here."""
    if case.cert == b"outside":
        raise Rejected("network", outside())
    if case.cert == b"loopback":
        raise Rejected("network", loopback())
'''

#: Makes unshare fail in every Python process started with this folder on PYTHONPATH.
REFUSE_UNSHARE = """
import errno
from tlsleak import _netns as netns

def _refused(flags):
    raise OSError(errno.EPERM, "Operation not permitted")

netns._unshare = _refused
"""

#: Root without CAP_SYS_ADMIN (a container): the network namespace alone is refused.
REFUSE_NETNS_ALONE = """
import errno
from tlsleak import _netns as netns

_real = netns._unshare

def _unshare(flags):
    if flags == netns._CLONE_NEWNET:
        raise OSError(errno.EPERM, "Operation not permitted")
    _real(flags)

netns._unshare = _unshare
"""


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "tlsleak_netns_probe.py").write_text(PROBE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.delenv(ENV, raising=False)
    return "tlsleak_netns_probe:init"


def _said(oracle: IsolatedOracle, what: bytes) -> str:
    verdict = oracle.check(InitCase(cert=what))
    assert verdict.outcome.status is Status.REJECTED, verdict.outcome
    assert not verdict.findings
    return verdict.outcome.message


def test_a_worker_cannot_reach_the_network_but_loopback_works(probe: str) -> None:
    with IsolatedOracle(probe) as oracle:
        assert oracle.network is not None
        assert oracle.network.isolated, oracle.network
        assert oracle.network.namespace in ("net", "user+net")
        assert oracle.network.warning() is None
        assert _said(oracle, b"outside") == "lo"
        assert _said(oracle, b"loopback") == "echoed"


def test_negative_control_without_the_namespace_the_host_network_is_seen(
    probe: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, os.environ["PYTHONPATH"])
    try:
        import tlsleak_netns_probe as direct  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    here = direct.outside()
    if here == "lo":
        pytest.skip("this host has no network interface but loopback itself")
    # The worker with isolation turned off is on the host's network too.
    monkeypatch.setenv(ENV, "host")
    with IsolatedOracle(probe) as oracle:
        assert oracle.network == Network(False, reason=f"{ENV}=host")
        assert _said(oracle, b"outside") == here


def test_a_worker_that_cannot_isolate_still_runs_and_says_why(probe: str, tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(REFUSE_UNSHARE)
    with IsolatedOracle(probe) as oracle:
        assert oracle.network == Network(False, reason="unshare: Operation not permitted")
        assert _said(oracle, b"loopback") == "echoed"


def _run_isolated(
    tmp_path: Path, *, sitecustomize: str | None = None, thread: bool = False
) -> dict[str, object]:
    """:func:`isolate` in a child: its result, the ids before and after, and the probe's view."""
    if sitecustomize is not None:
        (tmp_path / "sitecustomize.py").write_text(sitecustomize)
    script = textwrap.dedent(
        """
        import json, os, sys, threading
        from tlsleak._netns import isolate
        import tlsleak_netns_probe as probe
        if sys.argv[1:] == ["thread"]:
            threading.Thread(target=threading.Event().wait, daemon=True).start()
        ids = [os.getuid(), os.getgid()]
        net = isolate()
        print(json.dumps({"network": net.to_json(), "ids": ids, "after": [os.getuid(),
              os.getgid()], "outside": probe.outside(), "loopback": probe.loopback()}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *(["thread"] if thread else [])],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_without_the_right_to_a_bare_network_namespace_a_user_namespace_is_used(
    probe: str, tmp_path: Path
) -> None:
    found = _run_isolated(tmp_path, sitecustomize=REFUSE_NETNS_ALONE)
    network = Network.from_json(found["network"])
    assert network == Network(True, "user+net"), found
    assert found["after"] == found["ids"]  # the user and group are mapped to themselves
    assert found["outside"] == "lo"
    assert found["loopback"] == "echoed"


def test_an_unshare_that_claims_success_without_doing_it_is_not_isolation(
    probe: str, tmp_path: Path
) -> None:
    # What a seccomp filter returning 0 for unshare() looks like.
    lying = "from tlsleak import _netns as netns\nnetns._unshare = lambda flags: None\n"
    found = _run_isolated(tmp_path, sitecustomize=lying)
    network = Network.from_json(found["network"])
    assert network == Network(False, reason="unshare: succeeded, but the namespace is the same")


def test_a_process_with_threads_is_not_isolated_and_says_so(probe: str, tmp_path: Path) -> None:
    found = _run_isolated(tmp_path, thread=True)
    network = Network.from_json(found["network"])
    assert network == Network(False, reason="2 threads already running"), found


def test_network_states_round_trip_and_only_a_problem_gives_a_line() -> None:
    states = [
        Network(True, "net"),
        Network(True, "user+net"),
        Network(False, reason="unshare: Operation not permitted"),
        Network(True, "net", loopback=False, reason="lo: Operation not permitted"),
    ]
    for state in states:
        assert Network.from_json(json.loads(json.dumps(state.to_json()))) == state
    assert [s.warning() for s in states] == [
        None,
        None,
        "network: not isolated (unshare: Operation not permitted): targets could reach the network",
        "network: isolated, but loopback is down (lo: Operation not permitted)",
    ]
    assert Network.from_json(None) is None


def test_the_text_report_says_not_isolated_and_is_unchanged_when_isolated() -> None:
    files, statuses = [Path("/c/a")], Counter(rejected=1)
    plain = text.check_report("t", files, statuses, [], 0.1)
    isolated = text.check_report("t", files, statuses, [], 0.1, network=Network(True, "net"))
    assert isolated == plain
    refused = Network(False, reason="unshare: Operation not permitted")
    lines = text.check_report("t", files, statuses, [], 0.1, network=refused).splitlines()
    assert lines[1] == refused.warning()
    assert lines[:1] + lines[2:] == plain.splitlines()


@pytest.mark.parametrize("refuse", [False, True], ids=["isolated", "not-isolated"])
def test_check_reports_the_network_in_text_only_when_not_isolated_and_always_in_json(
    probe: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], refuse: bool
) -> None:
    if refuse:
        (tmp_path / "sitecustomize.py").write_text(REFUSE_UNSHARE)
    corpus = tmp_path / "corpus"
    write_case(corpus, InitCase(cert=b"loopback"))
    report = tmp_path / "report.json"
    assert main(["check", probe, str(corpus), "-q", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    network = json.loads(report.read_text())["network"]
    if refuse:
        assert out.count("network:") == 1
        assert "network: not isolated (unshare: Operation not permitted)" in out
        assert network == {
            "isolated": False,
            "namespace": None,
            "loopback": True,
            "reason": "unshare: Operation not permitted",
        }
    else:
        assert "network" not in out
        assert network["isolated"] is True
        assert network["reason"] is None


def test_the_json_report_carries_the_network() -> None:
    state = Network(True, "net")
    report = json_report.check_report(
        "t", ledgers=[], replays=3, files=[], statuses=Counter(), findings=[], network=state
    )
    assert report["network"] == state.to_json()
