"""Hypothesis strategies for init cases, valid and malformed.

Use them in property tests of your own init path::

    from hypothesis import given
    from tlsleak.strategies import init_cases

    @given(init_cases(key_types=["ec-p256", "rsa2048"]))
    def test_my_init_path_does_not_leak(case): ...

Every option is keyword-only and checked when the strategy is *created*, so a
typo fails at collection time with :class:`hypothesis.errors.InvalidArgument`
rather than in the middle of a run.  Options that take a list of enum values
(key types, modes, encodings, key formats) accept the members or their string
values (``"ec-p256"``, ``"client"``, ``"der"``, ``"pkcs8-encrypted"``); the
order of a list is the order examples shrink in.

Drawing is cheap: keys and certificates come from :mod:`tlsleak.cases.material`'s
per-process caches, so an example is a choice among cached bytes plus the
defect's own small edits.

Inside a Hypothesis test every drawn case records an event naming its defect
(``tlsleak defect: NAME``, or ``none``) and each mutation its name, for
``--hypothesis-show-statistics`` (:mod:`tlsleak.cases.hooks`, docs/hypothesis.md).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.strategies import DrawFn, SearchStrategy

from tlsleak.cases.case import InitCase, Mode
from tlsleak.cases.defects import DEFECTS, Base, Defect, Needs
from tlsleak.cases.hooks import note, quiet
from tlsleak.cases.material import Encoding, KeyFormat, KeyType

__all__ = [
    "MUTATED",
    "generate",
    "init_cases",
    "key_types",
    "malformed_cases",
    "mutated_cases",
    "valid_cases",
]

# Default orders: examples shrink towards the first value.  EC P-256 is first
# because it is the fastest to load and check (and the most common on the
# embedded side); RSA, the slowest, is last.
_KEY_TYPES: Final = (
    KeyType.EC_P256,
    KeyType.ED25519,
    KeyType.EC_P384,
    KeyType.ED448,
    KeyType.RSA2048,
)
_MODES: Final = (Mode.SERVER, Mode.CLIENT)
_ENCODINGS: Final = (Encoding.PEM, Encoding.DER)
# PKCS#8 first: it fits every key type, so a shrunk example stays valid
# whatever key type it shrinks to.
_KEY_FORMATS: Final = (
    KeyFormat.PKCS8,
    KeyFormat.PKCS1,
    KeyFormat.SEC1,
    KeyFormat.PKCS8_ENCRYPTED,
)
# A few fixed passwords, not drawn ones: every (key, password) pair is one
# slow key encryption, cached by material.key_bytes.  No NUL byte, so init
# paths that take the password as a C string see the same password.
_PASSWORDS: Final = (b"tlsleak", b"correct horse battery staple")
_SERVER_NAMES: Final = (b"", b"localhost")

E = TypeVar("E", bound=enum.Enum)


def _enum_option(
    name: str, cls: type[E], values: Iterable[E | str] | None, default: Sequence[E]
) -> tuple[E, ...]:
    """Validate a list-of-enum option: members or their values, non-empty, deduplicated."""
    if values is None:
        return tuple(default)
    valid = ", ".join(repr(m.value) for m in default)
    # A bare string is iterable, so key_types="rsa2048" would silently mean
    # the key types "r", "s", "a", ...: refuse it instead.
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidArgument(f"{name} must be a list of values from {valid}, not {values!r}")
    out: list[E] = []
    for value in values:
        member: E
        if isinstance(value, cls):
            member = value
        elif isinstance(value, str):
            try:
                member = cls(value)
            except ValueError:
                raise InvalidArgument(
                    f"{value!r} is not a valid value for {name}; valid ones are {valid}"
                ) from None
        else:
            raise InvalidArgument(
                f"{name} must hold {cls.__name__} values or strings, not {value!r}"
            )
        if member not in out:
            out.append(member)
    if not out:
        raise InvalidArgument(f"{name} must not be empty (leave it as None for every value)")
    return tuple(out)


def _issued_option(issued: bool | None) -> tuple[bool, ...]:
    if issued is None:
        # Self-signed first: one certificate is the simpler example.
        return (False, True)
    if not isinstance(issued, bool):
        raise InvalidArgument(f"issued must be True, False or None, not {issued!r}")
    return (issued,)


@dataclass(frozen=True, slots=True)
class _Dims:
    """The allowed values of every dimension of a base, in shrink order."""

    key_types: tuple[KeyType, ...]
    modes: tuple[Mode, ...]
    cert_encodings: tuple[Encoding, ...]
    key_formats: tuple[KeyFormat, ...]
    key_encodings: tuple[Encoding, ...]
    issued: tuple[bool, ...]

    def key_encodings_for(self, key_format: KeyFormat) -> tuple[Encoding, ...]:
        if key_format is KeyFormat.PKCS8_ENCRYPTED:
            # pyOpenSSL can't decrypt a DER key, so a valid encrypted key is PEM.
            return tuple(e for e in self.key_encodings if e is Encoding.PEM)
        return self.key_encodings

    def key_formats_for(self, key_type: KeyType) -> tuple[KeyFormat, ...]:
        return tuple(f for f in self.key_formats if f.fits(key_type) and self.key_encodings_for(f))

    def viable_key_types(self) -> tuple[KeyType, ...]:
        return tuple(kt for kt in self.key_types if self.key_formats_for(kt))

    def viable(self) -> bool:
        return bool(self.viable_key_types() and self.modes and self.cert_encodings and self.issued)

    def narrow(self, needs: Needs) -> _Dims:
        """These dimensions restricted to what ``needs`` admits (order kept)."""

        def keep(values: tuple[E, ...], allowed: frozenset[E] | None) -> tuple[E, ...]:
            return values if allowed is None else tuple(v for v in values if v in allowed)

        return _Dims(
            keep(self.key_types, needs.key_types),
            keep(self.modes, needs.modes),
            keep(self.cert_encodings, needs.cert_encodings),
            keep(self.key_formats, needs.key_formats),
            keep(self.key_encodings, needs.key_encodings),
            tuple(i for i in self.issued if needs.issued is None or i is needs.issued),
        )


def _dims(
    key_types: Iterable[KeyType | str] | None,
    modes: Iterable[Mode | str] | None,
    cert_encodings: Iterable[Encoding | str] | None,
    key_formats: Iterable[KeyFormat | str] | None,
    key_encodings: Iterable[Encoding | str] | None,
    issued: bool | None,
) -> _Dims:
    dims = _Dims(
        _enum_option("key_types", KeyType, key_types, _KEY_TYPES),
        _enum_option("modes", Mode, modes, _MODES),
        _enum_option("cert_encodings", Encoding, cert_encodings, _ENCODINGS),
        _enum_option("key_formats", KeyFormat, key_formats, _KEY_FORMATS),
        _enum_option("key_encodings", Encoding, key_encodings, _ENCODINGS),
        _issued_option(issued),
    )
    if not dims.viable_key_types():
        raise InvalidArgument(
            "no key can be written with these options: key formats "
            f"{[f.value for f in dims.key_formats]} fit none of the key types "
            f"{[k.value for k in dims.key_types]} in the key encodings "
            f"{[e.value for e in dims.key_encodings]} (an encrypted key must be PEM)"
        )
    return dims


def _bases(dims: _Dims) -> SearchStrategy[Base]:
    """Valid bases within ``dims``; each dimension shrinks to its first value."""
    key_type_st = st.sampled_from(dims.viable_key_types())
    # Built once per strategy rather than per draw: sampled_from is cheap to
    # draw from but not free to create.
    formats_st = {kt: st.sampled_from(dims.key_formats_for(kt)) for kt in KeyType}
    encodings_st = {
        f: st.sampled_from(dims.key_encodings_for(f))
        for f in KeyFormat
        if dims.key_encodings_for(f)
    }
    cert_encoding_st = st.sampled_from(dims.cert_encodings)
    issued_st = st.sampled_from(dims.issued)
    mode_st = st.sampled_from(dims.modes)
    password_st = st.sampled_from(_PASSWORDS)
    server_name_st = st.sampled_from(_SERVER_NAMES)
    # CA blob present first: "root in the CA blob" is the documented shape.
    with_ca_st = st.sampled_from((True, False))

    @st.composite
    def bases(draw: DrawFn) -> Base:
        key_type = draw(key_type_st)
        key_format = draw(formats_st[key_type])
        key_encoding = draw(encodings_st[key_format])
        encrypted = key_format is KeyFormat.PKCS8_ENCRYPTED
        mode = draw(mode_st)
        return Base.build(
            key_type,
            issued=draw(issued_st),
            mode=mode,
            cert_encoding=draw(cert_encoding_st),
            key_format=key_format,
            key_encoding=key_encoding,
            password=draw(password_st) if encrypted else b"",
            with_ca=draw(with_ca_st),
            server_name=draw(server_name_st) if mode is Mode.CLIENT else b"",
        )

    return bases()


def key_types(*, allowed: Iterable[KeyType | str] | None = None) -> SearchStrategy[KeyType]:
    """Generates :class:`~tlsleak.cases.material.KeyType` members.

    ``allowed`` restricts the key types (members or values such as
    ``"ed25519"``); by default every type, EC P-256 first.  Examples shrink
    towards the first allowed key type.
    """
    return st.sampled_from(_enum_option("allowed", KeyType, allowed, _KEY_TYPES))


def valid_cases(
    *,
    key_types: Iterable[KeyType | str] | None = None,
    modes: Iterable[Mode | str] | None = None,
    cert_encodings: Iterable[Encoding | str] | None = None,
    key_formats: Iterable[KeyFormat | str] | None = None,
    key_encodings: Iterable[Encoding | str] | None = None,
    issued: bool | None = None,
) -> SearchStrategy[InitCase]:
    """Generates init cases that a correct init path accepts.

    A case holds a leaf certificate (self-signed, or issued by an intermediate
    under a root; in PEM the blob is the leaf followed by the intermediate, in
    DER the leaf alone), its private key (PKCS#1, SEC1, PKCS#8, or encrypted
    PKCS#8 with its password; encrypted keys are always PEM), usually the root
    in the CA blob, and in client mode possibly the server name
    ``b"localhost"``.  Labels are empty.

    Each option restricts one dimension (``None`` allows every value):
    ``key_types``, ``modes``, ``cert_encodings``, ``key_formats``,
    ``key_encodings``, and ``issued`` (``True``: always chained, ``False``:
    always self-signed).  Key formats a key type can't use are skipped for it;
    options that leave no possible key raise ``InvalidArgument``.

    Examples shrink towards the first value of each list: by default an EC
    P-256 self-signed server case in PEM with a PKCS#8 key and the root as CA.
    """
    dims = _dims(key_types, modes, cert_encodings, key_formats, key_encodings, issued)
    return _bases(dims).map(_valid_case)


def _valid_case(base: Base) -> InitCase:
    # An event per drawn case, so --hypothesis-show-statistics gives the mix.
    note("defect", "none")
    return base.case


def _defect_option(defects: Iterable[str | Defect] | None) -> tuple[Defect, ...]:
    if defects is None:
        return tuple(DEFECTS.values())
    if isinstance(defects, str | bytes) or not isinstance(defects, Iterable):
        raise InvalidArgument(f"defects must be a list of defect names, not {defects!r}")
    wanted: set[str] = set()
    for item in defects:
        name = item.name if isinstance(item, Defect) else item
        if not isinstance(name, str) or name not in DEFECTS:
            raise InvalidArgument(
                f"{item!r} is not a defect; valid names are: {', '.join(DEFECTS)}"
            )
        wanted.add(name)
    if not wanted:
        raise InvalidArgument("defects must not be empty (leave it as None for every defect)")
    # Catalogue order, not the caller's: examples shrink towards the
    # catalogue's simplest defects.
    return tuple(d for d in DEFECTS.values() if d.name in wanted)


def malformed_cases(
    *,
    defects: Iterable[str | Defect] | None = None,
    max_defects: int = 1,
    key_types: Iterable[KeyType | str] | None = None,
    modes: Iterable[Mode | str] | None = None,
    cert_encodings: Iterable[Encoding | str] | None = None,
    key_formats: Iterable[KeyFormat | str] | None = None,
    key_encodings: Iterable[Encoding | str] | None = None,
    issued: bool | None = None,
) -> SearchStrategy[InitCase]:
    """Generates init cases damaged by defects from :data:`tlsleak.cases.defects.DEFECTS`.

    A valid case (see :func:`valid_cases`, whose options these share) is drawn
    among those the first defect applies to, then damaged by it and, when
    ``max_defects`` > 1, by up to ``max_defects - 1`` further defects, each on
    blobs no earlier defect touched.  The labels name every defect applied, in
    order.

    ``defects`` restricts the catalogue to these names (or
    :class:`~tlsleak.cases.defects.Defect` objects).  An unknown name, or a named
    defect that can't apply to any case the other options allow (say
    ``long-server-name`` with ``modes=["server"]``), raises
    ``InvalidArgument``.

    Only a single defect has a known outcome (its ``expect``): stacked defects
    can cancel out (an empty certificate *and* an empty key make a valid
    keyless case), so treat stacked cases as fuzz material, not as cases that
    must be rejected.

    Examples shrink towards the first defect in catalogue order, a single
    defect, the simplest valid case that defect applies to, and the defect's
    smallest parameters (shortest garbage, earliest cut point).
    """
    dims = _dims(key_types, modes, cert_encodings, key_formats, key_encodings, issued)
    chosen = _defect_option(defects)
    if isinstance(max_defects, bool) or not isinstance(max_defects, int) or max_defects < 1:
        raise InvalidArgument(f"max_defects must be an integer >= 1, not {max_defects!r}")
    plans: list[tuple[Defect, SearchStrategy[Base]]] = []
    impossible: list[str] = []
    for d in chosen:
        narrowed = dims.narrow(d.needs)
        if narrowed.viable():
            plans.append((d, _bases(narrowed)))
        else:
            impossible.append(d.name)
    if defects is not None and impossible:
        raise InvalidArgument(f"defects {impossible} can't apply to any case these options allow")
    if not plans:
        raise InvalidArgument("no defect applies to any case these options allow")
    pool = tuple(d for d, _ in plans)
    extra_st = st.integers(0, max_defects - 1)

    @st.composite
    def damaged(draw: DrawFn) -> InitCase:
        first, bases = draw(st.sampled_from(plans))
        base = draw(bases)
        case = first.apply(draw, base)
        note("defect", first.name)
        touched = first.touches
        for _ in range(draw(extra_st) if max_defects > 1 else 0):
            # Each further defect gets blobs nobody damaged yet, so it sees
            # them as valid and applies as declared.
            fits = [d for d in pool if d.applies(base) and not d.touches & touched]
            if not fits:
                break
            more = draw(st.sampled_from(fits))
            case = more.apply(draw, base.with_case(case))
            note("defect", more.name)
            touched |= more.touches
        return case

    return damaged()


def init_cases(
    *,
    defects: Iterable[str | Defect] | None = None,
    max_defects: int = 1,
    key_types: Iterable[KeyType | str] | None = None,
    modes: Iterable[Mode | str] | None = None,
    cert_encodings: Iterable[Encoding | str] | None = None,
    key_formats: Iterable[KeyFormat | str] | None = None,
    key_encodings: Iterable[Encoding | str] | None = None,
    issued: bool | None = None,
) -> SearchStrategy[InitCase]:
    """Generates valid and malformed init cases: ``valid_cases() | malformed_cases()``.

    Takes the options of :func:`malformed_cases` (the valid half ignores
    ``defects`` and ``max_defects``).  Examples shrink towards valid cases.
    """
    return valid_cases(
        key_types=key_types,
        modes=modes,
        cert_encodings=cert_encodings,
        key_formats=key_formats,
        key_encodings=key_encodings,
        issued=issued,
    ) | malformed_cases(
        defects=defects,
        max_defects=max_defects,
        key_types=key_types,
        modes=modes,
        cert_encodings=cert_encodings,
        key_formats=key_formats,
        key_encodings=key_encodings,
        issued=issued,
    )


#: The label prefix of a structure-aware mutation (``mutated:pem:relabel@cert``).
MUTATED: Final = "mutated:"


def mutated_cases(
    base: SearchStrategy[InitCase] | None = None, *, max_mutations: int = 2
) -> SearchStrategy[InitCase]:
    """Generates cases changed by structure-aware mutations (:mod:`tlsleak.cases.mutator`).

    A case is drawn from ``base`` (default: :func:`init_cases`), then changed
    by 1 to ``max_mutations`` mutations in a row: a blob through the PEM- and
    DER-level mutations of :mod:`tlsleak.cases.pem` and :mod:`tlsleak.cases.der`, valid
    material swapped in, blobs crossed over from a second case of ``base``,
    or the mode, password or server name changed.  Each mutation adds a label
    ``mutated:<name>`` (``mutated:der:length-too-short@cert``) to the labels
    the base case had, so a case says what was done to it.

    Every decision is drawn through Hypothesis, so examples shrink towards a
    single mutation, the first operation (a blob mutation of the
    certificate), the simplest PEM/DER mutation that applies, and the base
    strategy's own simplest case.  The outcome of a mutated case is not known
    in advance: use them as fuzz material (the invariant still holds).
    """
    if base is not None and not isinstance(base, SearchStrategy):
        raise InvalidArgument(f"base must be a strategy of InitCase, not {base!r}")
    if isinstance(max_mutations, bool) or not isinstance(max_mutations, int) or max_mutations < 1:
        raise InvalidArgument(f"max_mutations must be an integer >= 1, not {max_mutations!r}")
    source = init_cases() if base is None else base

    @st.composite
    def mutated(draw: DrawFn) -> InitCase:
        from tlsleak.cases.choices import DrawChoices
        from tlsleak.cases.mutator import mutate_case

        case = draw(source)
        choices = DrawChoices(draw)
        for _ in range(draw(st.integers(1, max_mutations))):
            with quiet():  # a crossover partner, not the example: not counted
                other = draw(source).encode()
            changed, name = mutate_case(case.encode(), choices, other=other)
            note("mutation", name)
            case = changed.with_labels(MUTATED + name)
        return case

    return mutated()


def generate(strategy: SearchStrategy[InitCase], n: int, *, seed: int) -> list[InitCase]:
    """``n`` examples of ``strategy``, the same ones for the same ``seed``.

    Not for tests (use ``@given`` there): this is how ``tlsleak corpus grow``
    makes new corpus entries.  Examples come from Hypothesis's generate phase
    only (no database, no shrinking), so they have the variety of a test run.
    Fewer than ``n`` come back when the strategy has fewer distinct examples.

    The same seed gives the same cases in every process (the material is
    deterministic, encrypted keys included).  Must not be called from inside
    a Hypothesis test.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidArgument(f"n must be an integer >= 0, not {n!r}")
    if n == 0:
        return []
    out: list[InitCase] = []

    def collect(case: InitCase) -> None:
        out.append(case)

    runner: Callable[[], None] = settings(
        database=None,
        max_examples=n,
        phases=[Phase.generate],
        derandomize=False,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )(hypothesis_seed(seed)(given(strategy)(collect)))
    runner()
    return out[:n]
