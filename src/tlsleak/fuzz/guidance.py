"""Error-path guidance: what an init attempt did in C, as coverage the fuzzer can see.

OpenSSL's C code is not instrumented, so libFuzzer sees only the Python lines
an input runs: every malformed certificate goes through the same
``load_certificate`` call whatever OpenSSL's parser made of it, and a plain
campaign's corpus collapses to a handful of inputs.  The error path an input
took is visible, though, in what the attempt reports:

- the failing step and each OpenSSL error on the queue, as a
  ``(step, library, reason)`` feature: ``certificate / asn1 / wrong tag`` and
  ``certificate / pem / no start line`` are different branches deep in C;
- the number of allocations the attempt made, bucketed (half an octave per
  bucket: 8-11, 12-15, 16-23, ...) per step: two inputs rejected at the same
  step with the same reason but a very different allocation count went
  different distances into the parser;
- the whole error stack of a rejection, in order, as one more feature: an
  ASN.1 failure is reported as the reason followed by one ``nested asn1
  error`` per enclosing structure, so the stack says how deep into the
  certificate or key the parser got; keeping an input that fails one level
  deeper is what walks the fuzzer into the structure;
- the kind of any finding at its step;
- the **allocation sites** of the attempt (:class:`SiteRecorder`), where the
  malloc interposer is preloaded: ``site <step> libcrypto.so.3+0x1a2b``, the
  place in C that allocated, plus the same site with the frame that called it
  (``< libcrypto.so.3+0x3c4d``), with its stack depth (``@6``, 512-byte
  steps) and with the bucket of how many allocations it made (``#4``: 4-7,
  libFuzzer's hit-count buckets: how often a loop over certificates, blocks
  or ASN.1 elements ran).  A library that clears OpenSSL's error queue on
  every rejection and reports one generic failure (Mongoose does) leaves
  every feature above the same for every input; which allocations its parser made still tells
  its paths apart, without rebuilding it with coverage.  Sites are named by
  module file name and offset (never a raw address: ASLR would make every
  worker's and every run's features differ), an allocation inside an
  allocator wrapper (``CRYPTO_malloc``, ``CRYPTO_zalloc``, ``strdup``) is
  named by its first caller outside them, and the interpreter's own sites
  (libpython, the python binary, extension modules, libffi, tlsleak's shims)
  are dropped: they follow Python's object churn, not the input.  The set of
  site names of an attempt is its *path* (``path <step> <hash>``, the sum of
  a 64-bit hash of each name, so a set costs no sorting): counted
  in a campaign's figures, never fed (nearly every input would be new).
  :data:`SITES_VARIABLE` turns sites off, or keeps them out of the guidance.

What each family adds, measured by ``bench/bench_guidance.py`` (60 s, one
worker, empty corpus, on ``tests/c/control_opaque.c``, which clears the queue
like Mongoose, seed 1): Python coverage alone reached 411-431 paths, error
pairs, stacks and allocation buckets 754-779 (1.8x), allocation sites on top
1,316-1,403 (1.75-1.80x the error-pair figure, 3.2x plain); feeding fewer site
families reaches fewer; see docs/fuzzing.md.

:func:`features` extracts them from a :class:`~tlsleak.check.oracle.Verdict`;
:class:`FeatureCounters` turns each distinct feature into a hit on a coverage
counter of its own (atheris reserves them), so an input that shows a feature
no earlier input showed is *new coverage* to libFuzzer and is kept in the
corpus.  Counters are handed out in order of first appearance; past the pool
size, features share counters by a stable hash (CRC-32, so the same feature
maps to the same counter in every worker and every run).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain
from typing import Final, NamedTuple

from tlsleak.check.oracle import Verdict
from tlsleak.ledgers.interposer import OTHER_THREAD, Interposer, interposer, is_interposing
from tlsleak.ledgers.shim import SHIM_NAME
from tlsleak.ledgers.symbols import DlInfo
from tlsleak.targets import Target

__all__ = [
    "FAMILIES_VARIABLE",
    "POOL_SIZE",
    "SITES_VARIABLE",
    "SITE_FAMILIES",
    "AttemptSites",
    "Feature",
    "FeatureCounters",
    "Site",
    "SiteRecorder",
    "alloc_bucket",
    "default_site_mode",
    "features",
    "hit_bucket",
    "is_alloc_bucket",
    "is_alloc_path",
    "is_alloc_site",
    "is_error_pair",
    "site_family",
    "site_recorder",
]

#: Coverage counters a worker reserves for features.
POOL_SIZE: Final = 4096

#: A feature, as a short text: ``"err certificate asn1 wrong tag"``.
Feature = str

_ERROR: Final = "err"
_STACK: Final = "stack"
_ALLOCS: Final = "alloc"
_FINDING: Final = "finding"
_SITE: Final = "site"
_PATH: Final = "path"

#: Environment variable: ``on`` (the default: record allocation sites and
#: guide by them), ``count`` (record and report them, guide by the rest) or
#: ``off`` (do not record them: no cost, no site features).
SITES_VARIABLE: Final = "TLSLEAK_FUZZ_SITES"
_SITE_MODES: Final = ("on", "count", "off")

#: Environment variable: which site feature families guide libFuzzer, comma
#: separated, of :data:`SITE_FAMILIES` (default all of them).  The rest are
#: still recorded and counted.  For comparisons (``bench/bench_guidance.py``).
FAMILIES_VARIABLE: Final = "TLSLEAK_FUZZ_SITE_FAMILIES"
#: A site alone, with its caller, at its depth, with its hit bucket.
SITE_FAMILIES: Final = ("site", "caller", "depth", "hits")


class Site(NamedTuple):
    """One allocation site of an attempt, named stably (``module+0xoffset``)."""

    name: str
    #: The frame that called the site (allocations through a wrapper only).
    caller: str | None
    #: Stack depth in 512-byte steps from the attempt's start; None on another thread.
    depth: int | None
    #: Allocations made there (with this caller, at this depth) in the attempt.
    hits: int = 1


def hit_bucket(hits: int) -> int:
    """libFuzzer's bucket of a hit count: 1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128+ (1 to 8)."""
    if hits < 4:
        return max(hits, 0)
    if hits < 32:
        return hits.bit_length() + 1
    return 7 if hits < 128 else 8


def alloc_bucket(count: int) -> int:
    """The bucket of an allocation count: half an octave wide above 3.

    0, 1, 2 and 3 are buckets of their own; above, a bucket is one of the two
    halves of a power-of-two range (4-5, 6-7, 8-11, 12-15, 16-23, ...), so a
    bucket is a relative change of at most 50%, not one more allocation.
    """
    if count < 4:
        return max(count, 0)
    top = count.bit_length() - 1
    half = (count >> (top - 1)) & 1
    return 2 * top + half


@functools.cache
def _name_hash(name: str) -> int:
    """A 64-bit hash of a site name, the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def _path(step: str, hashes: Iterable[int]) -> Feature:
    """The path feature of the distinct site names whose :func:`_name_hash` are ``hashes``.

    A sum, so that neither order nor sorting costs anything: a set of names
    is one number, computed from integers the recorder keeps per site.
    """
    return f"{_PATH} {step} {sum(hashes) & 0xFFFFFFFFFFFFFFFF:016x}"


def features(verdict: Verdict, sites: Iterable[Site] = ()) -> frozenset[Feature]:
    """The features one checked attempt shows (see the module docstring).

    ``sites`` are the attempt's allocation sites (:meth:`SiteRecorder.end`):
    :class:`AttemptSites` take the recorder's cached path, any other
    iterable of :class:`Site` the plain one; both give the same features.
    """
    outcome = verdict.outcome
    step = str(outcome.step or "-")
    found: set[Feature] = {f"{_ERROR} {step} {e.library} {e.reason}" for e in outcome.errors}
    if not outcome.errors:
        found.add(f"{_ERROR} {step} {outcome.status}")
    elif len(outcome.errors) > 1:
        found.add(f"{_STACK} {step} " + " > ".join(e.reason for e in outcome.errors))
    if verdict.allocations is not None:
        found.add(f"{_ALLOCS} {step} {alloc_bucket(verdict.allocations)}")
    found.update(f"{_FINDING} {f.kind} {step}" for f in verdict.findings)
    if isinstance(sites, AttemptSites):
        return sites.features(step).union(found)
    names: dict[str, int] = {}
    for site in sites:
        names[site.name] = names.get(site.name, 0) + site.hits
        found.add(f"{_SITE} {step} {site.name}")
        if site.caller is not None:
            found.add(f"{_SITE} {step} {site.name} < {site.caller}")
        if site.depth is not None:
            found.add(f"{_SITE} {step} {site.name} @{site.depth}")
    for name, hits in names.items():
        if hits > 1:  # how often a loop ran: how many certificates, elements, blocks
            found.add(f"{_SITE} {step} {name} #{hit_bucket(hits)}")
    if names:
        found.add(_path(step, map(_name_hash, names)))
    return frozenset(found)


def is_error_pair(feature: Feature) -> bool:
    """Whether ``feature`` is a ``(step, library, reason)`` pair or an outcome."""
    return feature.startswith(_ERROR + " ")


def is_alloc_bucket(feature: Feature) -> bool:
    """Whether ``feature`` is an allocation-count bucket."""
    return feature.startswith(_ALLOCS + " ")


def is_alloc_site(feature: Feature) -> bool:
    """Whether ``feature`` is an allocation site (alone, with its caller or its depth)."""
    return feature.startswith(_SITE + " ")


def is_alloc_path(feature: Feature) -> bool:
    """Whether ``feature`` is an attempt's whole set of allocation sites (a *path*).

    Counted, never fed to libFuzzer: nearly every input would be new coverage.
    """
    return feature.startswith(_PATH + " ")


class FeatureCounters:
    """Map features to coverage counters and hit them.

    ``pool`` are counter ids reserved up front (libFuzzer learns the counter
    array's size when fuzzing starts); ``hit`` increments one.  With atheris::

        FeatureCounters([atheris._reserve_counter() for _ in range(POOL_SIZE)],
                        lambda counter: atheris._trace_branch(counter))

    (``atheris._trace_branch`` itself, kept before ``atheris.Fuzz()`` starts,
    is atheris's pre-fuzzing function: libFuzzer never sees its hits.)
    """

    def __init__(self, pool: Sequence[int], hit: Callable[[int], object]) -> None:
        if not pool:
            raise ValueError("a feature counter pool can't be empty")
        self._pool = list(pool)
        self._hit = hit
        self._slots: dict[Feature, int] = {}

    def counter_for(self, feature: Feature) -> int:
        slot = self._slots.get(feature)
        if slot is None:
            if len(self._slots) < len(self._pool):
                slot = self._pool[len(self._slots)]
            else:
                slot = self._pool[zlib.crc32(feature.encode()) % len(self._pool)]
            self._slots[feature] = slot
        return slot

    def hit(self, found: Iterable[Feature]) -> None:
        """Hit the counter of each feature of ``found`` once.

        Hundreds of features an attempt, nearly all known: only the new ones
        go through :meth:`counter_for`, the rest are looked up and hit
        without a Python loop of their own.
        """
        slots = self._slots
        if isinstance(found, set | frozenset):
            new: Iterable[Feature] = found.difference(slots)
        else:  # in order: counters go to features in order of first appearance
            found = list(found)
            new = [f for f in found if f not in slots]
        for feature in new:
            self.counter_for(feature)
        deque(map(self._hit, map(slots.__getitem__, found)), maxlen=0)


# -- allocation sites ---------------------------------------------------------

#: Functions that only forward to malloc: a site inside one is named by its caller.
WRAPPERS: Final = (
    "CRYPTO_malloc",
    "CRYPTO_zalloc",
    "CRYPTO_realloc",
    "CRYPTO_clear_realloc",
    "CRYPTO_strdup",
    "CRYPTO_strndup",
    "CRYPTO_memdup",
    "CRYPTO_secure_malloc",
    "CRYPTO_secure_zalloc",
    "strdup",
    "strndup",
    "__strdup",
)

#: Objects whose sites are the interpreter's (or tlsleak's), not the code under test.
_INTERPRETER: Final = re.compile(
    r"^(libpython|python[0-9.]*$|libtlsleak_|libffi)|\.cpython-[^/]*\.so$"
)


def _mappings() -> list[tuple[int, int, str, str]]:
    """(start, end, permissions, path) of every file mapping of this process."""
    found = []
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/"):
                lo, _, hi = fields[0].partition("-")
                found.append((int(lo, 16), int(hi, 16), fields[1], fields[5].strip()))
    return found


#: Lists of ids whose features a recorder keeps whole (some 20 kB each).
_MEMO_SIZE: Final = 512


class AttemptSites:
    """The allocation sites of one attempt, as :meth:`SiteRecorder.end` read them.

    Compact: one integer per distinct (site, caller, depth) with the hit
    bucket of its site (:meth:`Interposer.sites_ids`); :func:`features` turns
    them into features through the recorder's caches.  Iterating gives the
    :class:`Site` objects themselves (the plain form, for tests and tools),
    until the next attempt begins.
    """

    __slots__ = ("_memo", "_recorder", "ids")

    def __init__(
        self, recorder: SiteRecorder, ids: list[int], memo: dict[str, frozenset[Feature]]
    ) -> None:
        self._recorder = recorder
        self.ids = ids
        #: step -> the site features of this very list of ids (shared by equal lists).
        self._memo = memo

    def __iter__(self) -> Iterator[Site]:
        return iter(self._recorder.named(self))

    def __len__(self) -> int:
        return len(self.ids)

    def features(self, step: str) -> frozenset[Feature]:
        """The site, hit-bucket and path features of this attempt at ``step``."""
        found = self._memo.get(step)
        if found is None:
            found = self._memo[step] = frozenset(self._recorder.site_features(self, step))
        return found


class SiteRecorder:
    """Allocation sites of one attempt at a time, named stably (``libcrypto.so.3+0x1a2b``).

    Made after the target is loaded (its libraries' wrappers are registered
    then).  ``feed`` says whether site features guide libFuzzer or are only
    counted (:data:`SITES_VARIABLE`).

    An attempt makes some 300 distinct (site, caller, depth) triples, nearly
    all seen before: each id is named and turned into feature strings once,
    the first time it shows up, and after that costs a dictionary lookup done
    by ``map``, not by a Python loop.  The caches are keyed by this process's
    addresses but give out names only: features stay the same in every process.
    """

    _families: frozenset[str] = frozenset(SITE_FAMILIES)

    def __init__(
        self, heap: Interposer, *, feed: bool = True, families: Iterable[str] = SITE_FAMILIES
    ) -> None:
        self._heap = heap
        self.families = frozenset(families)
        self.feed = feed
        self._names: dict[int, str | None] = {}
        #: id >> 4 (the entry's key) -> (name, caller, depth) and site address.
        self._triples: dict[int, tuple[str, str | None, int | None]] = {}
        self._sites: dict[int, int] = {}
        #: id -> site address (0: the interpreter's); site address -> _name_hash(name).
        self._site_of: dict[int, int] = {}
        self._hashes: dict[int, int] = {}
        #: step -> id -> the site features of that id at that step.
        self._by_step: dict[str, dict[int, tuple[Feature, ...]]] = {}
        #: A recent attempt's whole list of ids -> step -> its site features.
        self._memo: dict[tuple[int, ...], dict[str, frozenset[Feature]]] = {}
        self._dladdr = ctypes.CDLL(None).dladdr
        self._dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
        self._dladdr.restype = ctypes.c_int
        self._info = DlInfo()
        #: Wrapper functions registered (for tests and the worker's log).
        self.wrappers = self._register_wrappers()

    @property
    def feed(self) -> bool:
        """Whether site features guide libFuzzer (else they are only counted)."""
        return self._feed

    @feed.setter
    def feed(self, feed: bool) -> None:
        self._feed = feed
        self._forget_fed()

    @property
    def families(self) -> frozenset[str]:
        """The site feature families fed when :attr:`feed` (:data:`FAMILIES_VARIABLE`)."""
        return self._families

    @families.setter
    def families(self, families: frozenset[str]) -> None:
        self._families = families
        self._forget_fed()

    def _forget_fed(self) -> None:
        # fed()'s verdict on each feature seen so far, which depends on both.
        self._classified: set[Feature] = set()
        self._unfed: set[Feature] = set()

    def _register_wrappers(self) -> int:
        # The OpenSSL heap shim's hooks (CRYPTO_set_mem_functions) sit between
        # CRYPTO_malloc and malloc: its whole code is a wrapper.
        mappings = _mappings()
        count = sum(
            self._heap.sites_wrap(lo, hi - lo)
            for lo, hi, perms, path in mappings
            if "x" in perms and os.path.basename(path) == SHIM_NAME
        )
        addresses: set[int] = set()
        for path in dict.fromkeys(p for *_, p in mappings if ".so" in os.path.basename(p)):
            try:
                lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            except OSError:
                continue
            for name in WRAPPERS:
                fn = getattr(lib, name, None)
                address = ctypes.cast(fn, ctypes.c_void_p).value if fn is not None else None
                if address:
                    addresses.add(address)
        return count + sum(self._heap.sites_wrap(a) for a in sorted(addresses))

    def name(self, address: int) -> str | None:
        """``module+0xoffset`` for a code address; None for the interpreter's or an unknown one."""
        if address in self._names:
            return self._names[address]
        named = None
        if address and self._dladdr(address, ctypes.byref(self._info)) and self._info.dli_fname:
            module = os.path.basename(os.fsdecode(self._info.dli_fname))
            if not _INTERPRETER.search(module):
                named = f"{module}+{address - (self._info.dli_fbase or 0):#x}"
        self._names[address] = named
        return named

    def begin(self) -> None:
        """Record the sites of what runs from now on (in this thread, depths from here)."""
        self._heap.sites_begin()

    def end(self) -> AttemptSites:
        """Stop recording; the sites recorded since :meth:`begin`.

        Most attempts repeat the very list of ids of an earlier one (the same
        path through the same code): the features of the last
        :data:`_MEMO_SIZE` lists are kept whole.
        """
        self._heap.sites_end()
        ids = self._heap.sites_ids()
        key = tuple(ids)
        memo = self._memo.get(key)
        if memo is None:
            if not self._site_of.keys() >= set(ids):
                self._learn(ids)
            if len(self._memo) >= _MEMO_SIZE:  # the oldest goes
                del self._memo[next(iter(self._memo))]
            memo = self._memo[key] = {}
        return AttemptSites(self, ids, memo)

    def _learn(self, ids: list[int]) -> None:
        """Name the ids of this attempt not seen before (the full quadruples, read once)."""
        raw, _lost = self._heap.sites()
        for id_, (site, caller, depth, _hits) in zip(ids, raw, strict=False):
            if id_ in self._site_of:
                continue
            key = id_ >> 4
            if key not in self._sites:
                named = self.name(site)
                self._sites[key] = site if named is not None else 0
                if named is not None:
                    self._hashes.setdefault(site, _name_hash(named))
                    callee = self.name(caller) if caller else None
                    depth_ = None if depth == OTHER_THREAD else depth
                    self._triples[key] = (named, callee, depth_)
            self._site_of[id_] = self._sites[key]

    def named(self, attempt: AttemptSites) -> list[Site]:
        """The named sites of ``attempt``, in the order first seen (the plain form)."""
        raw, _lost = self._heap.sites()
        triples = self._triples
        return [
            Site(*triples[id_ >> 4], hits)
            for id_, (*_, hits) in zip(attempt.ids, raw, strict=False)
            if id_ >> 4 in triples
        ]

    def site_features(self, attempt: AttemptSites, step: str) -> list[Feature]:
        """What :func:`features` makes of ``attempt``'s sites at ``step``, from the caches."""
        cache = self._by_step.setdefault(step, {})
        ids = attempt.ids
        for id_ in set(ids).difference(cache):  # new at this step: a few an attempt
            triple = self._triples.get(id_ >> 4)
            cache[id_] = () if triple is None else _site_features(step, *triple, id_ & 0xF)
        found = list(chain.from_iterable(map(cache.__getitem__, ids)))
        sites = set(map(self._site_of.__getitem__, ids))
        sites.discard(0)
        if sites:
            found.append(_path(step, map(self._hashes.__getitem__, sites)))
        return found

    def fed(self, found: frozenset[Feature]) -> Iterable[Feature]:
        """The features of ``found`` that guide libFuzzer: never paths, sites if :attr:`feed`.

        Each feature is classified once; after that, one set difference.
        """
        new = found.difference(self._classified)
        if new:
            self._classified.update(new)
            self._unfed.update(f for f in new if not self._fed(f))
        return found.difference(self._unfed)

    def _fed(self, feature: Feature) -> bool:
        if is_alloc_path(feature):
            return self._feed and "path" in self._families
        if not is_alloc_site(feature):
            return True
        return self._feed and site_family(feature) in self.families


def site_family(feature: Feature) -> str:
    """Which of :data:`SITE_FAMILIES` a site feature is."""
    last = feature.rpartition(" ")[2]
    if last[:1] == "@":
        return "depth"
    if last[:1] == "#":
        return "hits"
    return "caller" if " < " in feature else "site"


def _site_features(
    step: str, name: str, caller: str | None, depth: int | None, bucket: int
) -> tuple[Feature, ...]:
    """The features of one named site at ``step``: alone, with its caller, at its depth,
    with the hit bucket of its site (0: one allocation, no feature)."""
    found = [f"{_SITE} {step} {name}"]
    if caller is not None:
        found.append(f"{_SITE} {step} {name} < {caller}")
    if depth is not None:
        found.append(f"{_SITE} {step} {name} @{depth}")
    if bucket:
        found.append(f"{_SITE} {step} {name} #{bucket}")
    return tuple(found)


def default_site_mode(target: Target) -> str:
    """Whether sites guide a campaign on ``target`` when :data:`SITES_VARIABLE` is not set.

    ``"on"`` where errors say little: a ``c:`` library (it may clear
    OpenSSL's queue, as Mongoose's backend does) or a stack with no OpenSSL
    error queue at all (mbedtls, grpc, mongoose).  ``"off"`` where error
    pairs already walk the fuzzer into the parsers (pyopenssl, ssl, the
    controls): there recording sites costs up to half the campaign's
    executions (bench/bench_campaign_speed.py) for little new guidance.
    """
    if target.name.startswith("c:") or target.error_queue() is None:
        return "on"
    return "off"


def site_recorder(default: str = "on") -> SiteRecorder | None:
    """A recorder for this process, or None: the interposer is not preloaded, or sites are off.

    ``default`` is the mode when :data:`SITES_VARIABLE` is not set (see
    :func:`default_site_mode`).

    :class:`ValueError` for a value of :data:`SITES_VARIABLE` that is not a mode, or of
    :data:`FAMILIES_VARIABLE` that names something else than :data:`SITE_FAMILIES`.
    """
    mode = os.environ.get(SITES_VARIABLE, "") or default
    if mode not in _SITE_MODES:
        raise ValueError(f"{SITES_VARIABLE} must be one of {', '.join(_SITE_MODES)}, not {mode!r}")
    families = [f.strip() for f in os.environ.get(FAMILIES_VARIABLE, "").split(",") if f.strip()]
    unknown = sorted(set(families) - set(SITE_FAMILIES) - {"path"})
    if unknown:
        raise ValueError(
            f"{FAMILIES_VARIABLE} takes {', '.join(SITE_FAMILIES)}, not {', '.join(unknown)}"
        )
    if mode == "off" or not is_interposing():
        return None
    return SiteRecorder(interposer(), feed=mode == "on", families=families or SITE_FAMILIES)
