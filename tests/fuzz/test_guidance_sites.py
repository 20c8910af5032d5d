"""Allocation-site guidance: the malloc interposer's sites of an attempt, as features.

The control is ``tests/c/control_opaque.c``: it clears OpenSSL's error queue
and reports one generic failure on every rejection, so error pairs cannot
tell its paths apart; its allocation sites must (positive control).  With
recording off there are no site features, and the features of one input are
the same in two processes (ASLR must not leak into them: negative controls).
The interposer works only preloaded, so attempts run in a child process.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tlsleak.cases.case import InitCase
from tlsleak.check.oracle import Verdict
from tlsleak.fuzz import guidance
from tlsleak.fuzz.campaign import Campaign, CampaignOptions
from tlsleak.fuzz.guidance import (
    FAMILIES_VARIABLE,
    SITES_VARIABLE,
    Site,
    SiteRecorder,
    default_site_mode,
    features,
    hit_bucket,
    is_alloc_bucket,
    is_alloc_path,
    is_alloc_site,
    is_error_pair,
    site_family,
    site_recorder,
)
from tlsleak.fuzz.progress import status_line
from tlsleak.ledgers.shim import preload_env
from tlsleak.targets import Outcome, Status, resolve_target

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the interposer is built for Linux (LD_PRELOAD)"
)

PEM_GARBAGE = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
PEM_OTHER_LABEL = b"-----BEGIN SOMETHING-----\nAAAA\n-----END SOMETHING-----\n"
DER_GARBAGE = b"\x30\x03\x02\x01\x05"

#: Checks each named certificate blob once unrecorded (the process's first
#: attempts load OpenSSL's tables), then twice recorded (the recorder's caches
#: cold, then warm); prints the features, and whether the plain form of the
#: same sites (Site objects, no cache) gives the same ones.
CHILD = """\
import json, sys
from tlsleak.cases.case import InitCase
from tlsleak.check.oracle import Oracle
from tlsleak.fuzz.guidance import features, site_recorder
from tlsleak.targets import resolve_target

oracle = Oracle(resolve_target("c:" + sys.argv[1])).start()
recorder = site_recorder()
out = {"recorder": recorder is not None, "wrappers": recorder.wrappers if recorder else 0}
blobs = json.loads(sys.argv[2])
for blob in blobs.values():
    oracle.check(InitCase(cert=bytes.fromhex(blob)))
for name, blob in blobs.items():
    runs, plain = [], []
    for _ in range(2):
        if recorder is not None:
            recorder.begin()
        verdict = oracle.check(InitCase(cert=bytes.fromhex(blob)))
        sites = recorder.end() if recorder is not None else ()
        runs.append(sorted(features(verdict, sites)))
        plain.append(sorted(features(verdict, list(sites))) == runs[-1])
    out[name] = {"runs": runs, "message": verdict.outcome.message, "plain": plain}
print(json.dumps(out))
"""


def _attempts(library: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    blobs = {"pem": PEM_GARBAGE, "label": PEM_OTHER_LABEL, "der": DER_GARBAGE}
    hexed = json.dumps({k: v.hex() for k, v in blobs.items()})
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(library), hexed],
        env=preload_env({**os.environ, **(env or {})}),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def opaque_runs(c_controls: dict[str, Path]) -> dict[str, Any]:
    return _attempts(c_controls["opaque"])


def _family(found: list[str], kind: Any) -> set[str]:
    return {f for f in found if kind(f)}


def test_sites_tell_apart_paths_that_error_pairs_cannot(opaque_runs: dict[str, Any]) -> None:
    assert opaque_runs["recorder"]
    assert opaque_runs["wrappers"] > 0  # CRYPTO_malloc and friends (and the heap shim)
    pem, der, label = (opaque_runs[k]["runs"][0] for k in ("pem", "der", "label"))
    # The queue is cleared and the text generic: the same error pair for all three.
    assert opaque_runs["pem"]["message"] == "TLS initialisation failed"
    assert _family(pem, is_error_pair) == _family(der, is_error_pair) == {"err init rejected"}
    assert _family(label, is_error_pair) == {"err init rejected"}
    # ... while the sites differ: PEM decoding, a DER copy, a label refused early.
    pem_sites, der_sites = _family(pem, is_alloc_site), _family(der, is_alloc_site)
    label_sites = _family(label, is_alloc_site)
    assert pem_sites
    assert der_sites
    assert label_sites
    assert pem_sites != der_sites != label_sites != pem_sites
    assert len(_family(pem, is_alloc_path) | _family(der, is_alloc_path)) == 2
    # The control's own allocations are named by its file, OpenSSL's by libcrypto's.
    assert any(" control_opaque.so+0x" in f or " opaque.so+0x" in f for f in pem_sites)
    assert any("libcrypto" in f for f in pem_sites)
    # The interpreter's own allocations are dropped.
    assert not any("python" in f or "libtlsleak_" in f for f in pem_sites | der_sites)


def test_site_features_are_stable_across_attempts_and_processes(
    opaque_runs: dict[str, Any], c_controls: dict[str, Path]
) -> None:
    again = _attempts(c_controls["opaque"])  # another process: other ASLR addresses
    for name in ("pem", "der", "label"):
        first, second = opaque_runs[name]["runs"]
        assert first == second, name
        assert again[name]["runs"][0] == first, name
        assert not any("0x7f" in f for f in first)  # module offsets, never mapped addresses


def test_the_recorders_caches_give_the_features_of_the_plain_form(
    opaque_runs: dict[str, Any],
) -> None:
    # Cold and warm caches, ids with the site's hit bucket computed in C: the
    # same features as Site objects through the uncached path.
    for name in ("pem", "der", "label"):
        assert opaque_runs[name]["plain"] == [True, True], name
        assert any("#" in f for f in opaque_runs[name]["runs"][0]) or name == "label"


def test_with_recording_off_there_are_no_site_features(c_controls: dict[str, Path]) -> None:
    runs = _attempts(c_controls["opaque"], {SITES_VARIABLE: "off"})
    assert not runs["recorder"]
    for name in ("pem", "der", "label"):
        found = runs[name]["runs"][0]
        assert found
        assert not any(is_alloc_site(f) or is_alloc_path(f) for f in found)


def test_without_the_preloaded_interposer_there_is_no_recorder() -> None:
    assert site_recorder() is None  # pytest's own process has no interposer


def test_a_bad_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SITES_VARIABLE, "maybe")
    with pytest.raises(ValueError, match=SITES_VARIABLE):
        site_recorder()


def _verdict() -> Verdict:
    outcome = Outcome(Status.REJECTED, "init", (), "TLS initialisation failed")
    return Verdict(InitCase(), outcome, (), 40)


def test_site_features_name_site_caller_depth_and_path() -> None:
    sites = [Site("lib.so+0x10", None, 2), Site("libcrypto.so.3+0x20", "libssl.so.3+0x30", None)]
    found = features(_verdict(), sites)
    assert _family(sorted(found), is_alloc_site) == {
        "site init lib.so+0x10",
        "site init lib.so+0x10 @2",
        "site init libcrypto.so.3+0x20",
        "site init libcrypto.so.3+0x20 < libssl.so.3+0x30",
    }
    paths = _family(sorted(found), is_alloc_path)
    assert len(paths) == 1
    # The path is the set of site names: order, callers and depths do not change it.
    reordered = [Site("libcrypto.so.3+0x20", None, 7), Site("lib.so+0x10", None, None)]
    assert _family(sorted(features(_verdict(), reordered)), is_alloc_path) == paths
    assert not any(is_error_pair(f) or is_alloc_bucket(f) for f in paths | _family(
        sorted(found), is_alloc_site))  # fmt: skip
    assert features(_verdict()) == found - paths - _family(sorted(found), is_alloc_site)


def test_hit_counts_are_bucketed_like_libfuzzer_counters() -> None:
    assert [hit_bucket(n) for n in (1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 127, 128, 10**6)] == [
        1, 2, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8,
    ]  # fmt: skip
    # Hits add up over a name's callers and depths; one allocation adds no feature.
    sites = [Site("lib.so+0x10", "a.so+0x1", 1, 3), Site("lib.so+0x10", "b.so+0x2", 2, 2)]
    assert "site init lib.so+0x10 #4" in features(_verdict(), sites)
    once = features(_verdict(), [Site("lib.so+0x10", None, 1, 1)])
    assert not any("#" in f for f in once)
    more = features(_verdict(), [Site("lib.so+0x10", None, 1, 40)])
    assert "site init lib.so+0x10 #7" in more
    assert _family(sorted(more), is_alloc_path) == _family(sorted(once), is_alloc_path)


def test_paths_are_never_fed_and_sites_only_when_asked() -> None:
    found = features(_verdict(), [Site("lib.so+0x10", None, 2)])
    recorder = SiteRecorder.__new__(SiteRecorder)  # fed() needs no interposer
    recorder.feed = True
    assert set(recorder.fed(found)) == {f for f in found if not is_alloc_path(f)}
    recorder.feed = False
    assert set(recorder.fed(found)) == {
        f for f in found if not is_alloc_path(f) and not is_alloc_site(f)
    }


def test_a_short_campaign_counts_sites_and_paths(
    tmp_path: Path, c_controls: dict[str, Path]
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    target = f"c:{c_controls['opaque']}"
    options = CampaignOptions(
        target, tmp_path / "out", corpus=corpus, seconds=6, seed=1, minimize_budget=0
    )
    status = Campaign(options).run()
    assert status.execs > 0
    assert status.alloc_sites > 0
    assert status.alloc_paths > 0
    assert status.error_pairs <= 3  # the control says nothing more than "failed"
    assert status.findings == []  # it is correct: nothing to find
    assert f"/{status.alloc_sites:,} sites" in status_line(status)
    last = json.loads((tmp_path / "out" / "stats.jsonl").read_text().splitlines()[-1])
    assert last["alloc_sites"] == status.alloc_sites
    assert last["alloc_paths"] == status.alloc_paths


def test_site_features_belong_to_one_family_each() -> None:
    sites = [Site("lib.so+0x10", "a.so+0x1", 2, 3)]
    families = {f: site_family(f) for f in features(_verdict(), sites) if is_alloc_site(f)}
    assert families == {
        "site init lib.so+0x10": "site",
        "site init lib.so+0x10 < a.so+0x1": "caller",
        "site init lib.so+0x10 @2": "depth",
        "site init lib.so+0x10 #3": "hits",
    }


def test_only_the_asked_families_are_fed() -> None:
    found = features(_verdict(), [Site("lib.so+0x10", "a.so+0x1", 2, 3)])
    recorder = SiteRecorder.__new__(SiteRecorder)  # fed() needs no interposer
    recorder.families = frozenset({"site", "hits"})
    recorder.feed = True
    fed = set(recorder.fed(found))
    assert {f for f in fed if is_alloc_site(f)} == {
        "site init lib.so+0x10",
        "site init lib.so+0x10 #3",
    }
    assert {f for f in found if not is_alloc_site(f) and not is_alloc_path(f)} <= fed
    recorder.families = frozenset({"caller"})  # classifies again
    assert {f for f in recorder.fed(found) if is_alloc_site(f)} == {
        "site init lib.so+0x10 < a.so+0x1"
    }


def test_a_bad_family_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAMILIES_VARIABLE, "site,stack")
    with pytest.raises(ValueError, match="stack"):
        site_recorder()


class _FakeHeap:
    """The sites API of an interposer, replaying made-up attempts (no preload needed)."""

    def __init__(self) -> None:
        self.raw: list[tuple[int, int, int, int]] = []
        self.ids: list[int] = []

    def sites_wrap(self, start: int, size: int = 0) -> bool:
        return False

    def sites_begin(self) -> None:
        pass

    def sites_end(self) -> None:
        pass

    def sites_ids(self) -> list[int]:
        return list(self.ids)

    def sites(self) -> tuple[list[tuple[int, int, int, int]], int]:
        return list(self.raw), 0

    def attempt(self, entries: list[tuple[int, int, int, int]]) -> None:
        """(site, caller, depth, hits) entries, with ids made like malloc.c makes them."""
        totals: dict[int, int] = {}
        for site, _caller, _depth, hits in entries:
            totals[site] = totals.get(site, 0) + hits
        self.raw = entries
        self.ids = [
            (hash((s, c, d)) & 0xFFFFFFFFFFFFFFF) << 4
            | (hit_bucket(totals[s]) if totals[s] > 1 else 0)
            for s, c, d, _h in entries
        ]


def _code_addresses() -> list[int]:
    libc = ctypes.CDLL(None)
    return [ctypes.cast(getattr(libc, n), ctypes.c_void_p).value or 0 for n in ("qsort", "bsearch")]


def test_cached_features_match_the_plain_form_and_the_memo_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(guidance, "_MEMO_SIZE", 4)
    heap = _FakeHeap()
    recorder = SiteRecorder(heap, feed=True)  # type: ignore[arg-type]
    a, b = _code_addresses()
    attempts = [
        [(a + 1, 0, 1, 1)],
        [(a + 1, b + 2, 1, 3), (a + 1, b + 2, 2, 1)],
        [(a + 1, 0, 1, 1), (b + 5, 0, 3, 40)],
    ]
    seen: dict[int, frozenset[str]] = {}
    for round_ in range(3):  # cold, then from the per-id caches and the memo
        for i, entries in enumerate(attempts + [[(b + 7, 0, k, 1)] for k in range(5)]):
            heap.attempt(entries)
            recorder.begin()
            sites = recorder.end()
            found = features(_verdict(), sites)
            assert found == features(_verdict(), list(sites)), (round_, i)
            assert seen.setdefault(i, found) == found
            assert len(recorder._memo) <= 4
    assert seen[0] != seen[2]  # more sites: other features, another path
    assert any(f.endswith(" #4") for f in seen[1])  # 3 + 1 allocations at one site
    assert any(f.endswith(" #7") for f in seen[2])
    assert not any(f.endswith(" #") or "0x7f" in f for f in seen[1])


class _Stack:
    """Just what default_site_mode reads of a target."""

    def __init__(self, name: str, queue: object) -> None:
        self.name = name
        self._queue = queue

    def error_queue(self) -> object:
        return self._queue


def test_sites_guide_by_default_only_where_errors_say_little() -> None:
    queue = object()
    # A C library (it may clear the queue) or a stack with no OpenSSL queue: on.
    assert default_site_mode(_Stack("c:/lib/libx.so", queue)) == "on"  # type: ignore[arg-type]
    assert default_site_mode(_Stack("mbedtls", None)) == "on"  # type: ignore[arg-type]
    # Error pairs already lead into OpenSSL's parsers: off, for the speed.
    assert default_site_mode(resolve_target("pyopenssl")) == "off"
    assert default_site_mode(resolve_target("control-fixed")) == "off"
