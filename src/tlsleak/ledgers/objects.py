"""The typed OpenSSL object ledger: live SSL_CTX, SSL, X509, EVP_PKEY, BIO, ... handles.

pyOpenSSL (and any Python code written on cryptography's raw bindings) calls
OpenSSL through one cffi ``lib`` object, reached through module globals such as
``OpenSSL.SSL._lib``.  While this ledger is started, every module global bound
to that object is rebound to a proxy in which the functions that make, free,
share or hand over OpenSSL objects are wrapped:

* a constructor (``SSL_CTX_new``, ``PEM_read_bio_X509``, ``X509_dup``, ...)
  that returns non-NULL adds a live object of its type with one reference;
* an up-ref (``X509_up_ref``, ...) adds a reference to a live object;
* a free (``SSL_CTX_free``, ...) drops one reference; at zero the object is
  gone, along with the references it owned;
* an ownership transfer (``SSL_set_bio``, ``SSL_CTX_add_extra_chain_cert``,
  ``SSL_CTX_set_cert_store``) moves the caller's reference into the receiving
  object, so it is dropped when that object is freed.

A correct program therefore nets zero.  References OpenSSL takes internally
(``SSL_new`` holding its ``SSL_CTX``, a store holding its certificates) are not
modelled: a leaked parent is reported as itself, and what hangs off it is the
business of the heap-level ledger.  Objects made before :meth:`start` are not
counted; freeing them is ignored.  Every other attribute of the proxy is the
real one, so code that is not counted runs at full speed.

In the oracle's attribution replay of a leak (:meth:`OpenSSLObjectLedger.begin_stacks`)
the constructors are swapped for ones that also keep the Python stack of each
object made, so that a leak names the line of the user's code that made what
was lost (``lost at mylib/tls.py:17 (init)``, see
:func:`tlsleak.ledgers.symbols.python_stack`).  Only then: a stack walk per
constructor call would cost ordinary attempts far more than the counting.

The binding may be an older one (a ``--python`` interpreter with pyOpenSSL 23
on cryptography 41, docs/python.md): the functions it lacks are simply not
wrapped, a type is counted only when the binding has both a constructor and a
destructor of it (a counter it cannot keep is left out, never shown as 0), and
a binding that cannot make or free ``SSL_CTX``, ``SSL``, ``X509``,
``EVP_PKEY`` and ``BIO`` objects makes :meth:`OpenSSLObjectLedger.start` say
which functions it misses.  cryptography is imported when the ledger starts,
not with this module: the check worker imports every ledger, also where the
code under test has no cryptography.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import types
from collections.abc import Callable, Iterable
from typing import Any, Final

from tlsleak.ledgers.base import Counts, LedgerUnavailable
from tlsleak.ledgers.symbols import Frame, LostStack, python_stack

__all__ = ["CONSTRUCTORS", "DESTRUCTORS", "TRANSFERS", "UP_REFS", "OpenSSLObjectLedger"]

#: Functions returning a new object (with one reference for the caller), by type.
CONSTRUCTORS: Final[dict[str, tuple[str, ...]]] = {
    "SSL_CTX": ("SSL_CTX_new", "SSL_CTX_new_ex"),
    "SSL": ("SSL_new", "SSL_dup"),
    "BIO": (
        "BIO_new",
        "BIO_new_mem_buf",
        "BIO_new_file",
        "BIO_new_fp",
        "BIO_new_fd",
        "BIO_new_socket",
    ),
    "X509": (
        "X509_new",
        "X509_dup",
        "PEM_read_bio_X509",
        "PEM_read_bio_X509_AUX",
        "d2i_X509_bio",
        "d2i_X509",
        "SSL_get1_peer_certificate",
        "SSL_get_peer_certificate",
        "X509_STORE_CTX_get1_issuer",
    ),
    "EVP_PKEY": (
        "EVP_PKEY_new",
        "PEM_read_bio_PrivateKey",
        "d2i_PrivateKey_bio",
        "PEM_read_bio_PUBKEY",
        "d2i_PUBKEY_bio",
        "X509_get_pubkey",
        "EVP_PKEY_dup",
    ),
    "X509_STORE": ("X509_STORE_new",),
    "X509_STORE_CTX": ("X509_STORE_CTX_new",),
    "X509_NAME": ("X509_NAME_new", "X509_NAME_dup"),
    "X509_CRL": ("X509_CRL_new", "PEM_read_bio_X509_CRL", "d2i_X509_CRL_bio"),
    "SSL_SESSION": ("SSL_get1_session", "SSL_SESSION_new"),
    "EC_KEY": ("EC_KEY_new_by_curve_name",),
    "DH": ("PEM_read_bio_DHparams",),
}

#: Functions dropping one reference, by type.
DESTRUCTORS: Final[dict[str, tuple[str, ...]]] = {
    "SSL_CTX": ("SSL_CTX_free",),
    "SSL": ("SSL_free",),
    "BIO": ("BIO_free", "BIO_vfree"),
    "X509": ("X509_free",),
    "EVP_PKEY": ("EVP_PKEY_free",),
    "X509_STORE": ("X509_STORE_free",),
    "X509_STORE_CTX": ("X509_STORE_CTX_free",),
    "X509_NAME": ("X509_NAME_free",),
    "X509_CRL": ("X509_CRL_free",),
    "SSL_SESSION": ("SSL_SESSION_free",),
    "EC_KEY": ("EC_KEY_free",),
    "DH": ("DH_free",),
}

#: The types a binding must be able to make and free for the ledger to count at
#: all: the objects of every TLS init path (a context, a connection, what is
#: loaded into them, and the memory BIOs it is loaded through).
ESSENTIAL: Final = ("SSL_CTX", "SSL", "X509", "EVP_PKEY", "BIO")

#: Functions adding one reference (return 1 on success).
UP_REFS: Final[tuple[str, ...]] = (
    "SSL_CTX_up_ref",
    "SSL_up_ref",
    "BIO_up_ref",
    "X509_up_ref",
    "EVP_PKEY_up_ref",
    "X509_STORE_up_ref",
    "X509_CRL_up_ref",
    "SSL_SESSION_up_ref",
)

#: Functions that take over the caller's reference(s) on success:
#: name -> (index of the receiving object, indexes of the objects handed over,
#: whether the return value says success (else: always succeeds)).
TRANSFERS: Final[dict[str, tuple[int, tuple[int, ...], bool]]] = {
    # SSL_set_bio(3): "SSL_set_bio() takes ownership of rbio and wbio"; when
    # they are the same BIO only one reference is taken.
    "SSL_set_bio": (0, (1, 2), False),
    # SSL_CTX_add_extra_chain_cert(3): the certificate "should not be freed by
    # the application" once it was added.
    "SSL_CTX_add_extra_chain_cert": (0, (1,), True),
    # SSL_CTX_set_cert_store(3): the context takes the store over.
    "SSL_CTX_set_cert_store": (0, (1,), False),
}


class _Books:
    """Live objects of one binding, shared by every ledger started on it.

    Kept as flat dicts keyed by the pointer (cffi pointers hash and compare
    by address) rather than a node object per handle: these run on every
    counted call of the init path, and the benchmark holds them to a few
    percent of it.
    """

    def __init__(self, kinds: Iterable[str] = CONSTRUCTORS) -> None:
        # Reentrant: a free can run from a garbage-collection callback while
        # the same thread is inside one of these methods.
        self.lock = threading.RLock()
        self.refs: dict[Any, int] = {}
        # ptr -> (the pointer object made() stored, type).  A pointer handed to
        # transfer() may be an owning ffi.gc() object: it must never be kept
        # (that would keep its object alive), so we keep the stored one.
        self.kind_of: dict[Any, tuple[Any, str]] = {}
        #: References an object took over (ownership transfers), if any.
        self.owned: dict[Any, list[Any]] = {}
        #: Live objects of each type the binding can make and free (only those).
        self.counts: dict[str, int] = dict.fromkeys(kinds, 0)
        #: Addresses handed out again while we thought them live (freed unseen).
        self.unseen_frees = 0
        #: [constructor calls since reset, the call number to fail (0: none)].
        self.faults = [0, 0]
        #: While stacks are recorded: ptr -> (order made, its Python stack).
        self.stacks: dict[Any, tuple[int, tuple[Frame, ...]]] = {}
        self.stacks_made = 0

    def made(self, ptr: Any, kind: str) -> None:
        with self.lock:
            if ptr in self.refs:
                # The address was reused, so the old object was freed by a path
                # we do not see (an owner we don't track); count it gone.
                self.unseen_frees += 1
                self._drop(ptr)
            self.refs[ptr] = 1
            self.kind_of[ptr] = (ptr, kind)
            self.counts[kind] += 1

    def release(self, ptr: Any) -> None:
        with self.lock:
            refs = self.refs.get(ptr)
            if refs is None:
                return
            if refs > 1:
                self.refs[ptr] = refs - 1
            else:
                self._drop(ptr)

    def _drop(self, ptr: Any) -> None:
        del self.refs[ptr]
        self.counts[self.kind_of.pop(ptr)[1]] -= 1
        for child in self.owned.pop(ptr, ()):
            self.release(child)

    def up_ref(self, ptr: Any) -> None:
        with self.lock:
            refs = self.refs.get(ptr)
            if refs is not None:
                self.refs[ptr] = refs + 1

    def transfer(self, owner: Any, handed: Iterable[Any]) -> None:
        if not owner:
            # Handed to NULL (a caller that did not check its constructor):
            # nothing takes the references over, they stay the caller's.
            return
        with self.lock:
            owner_entry = self.kind_of.get(owner)
            seen: list[Any] = []
            for ptr in handed:
                entry = self.kind_of.get(ptr) if ptr else None
                if entry is None or entry[0] in seen:
                    continue
                seen.append(entry[0])
                if owner_entry is None:
                    # Handed to an object made before counting began: it leaves
                    # the books with that owner.
                    self.release(ptr)
                    continue
                owned = self.owned.setdefault(owner_entry[0], [])
                if entry[0] not in owned:
                    owned.append(entry[0])


# The fast paths below are _Books.made and _Books.release inlined, without
# the lock: they run for every object an init path makes and frees, and a
# method call plus a lock per call was a fifth of the pyopenssl path's time.
# Each step is a single dict operation (atomic under the GIL); what two
# threads could still interleave is a counter update, and a miscount from
# that cannot recur on every replay, which is what the oracle asks of a leak.
# Rare cases (address reuse, up-refs, owned references) take the locked path.


def _wrap_constructor(real: Callable[..., Any], books: _Books, kind: str) -> Callable[..., Any]:
    refs, kind_of, counts, made = books.refs, books.kind_of, books.counts, books.made
    faults = books.faults
    null = _null()

    def constructor(*args: Any) -> Any:
        faults[0] += 1
        if faults[0] == faults[1]:
            # Allocation-failure injection: this constructor "ran out of
            # memory".  Its real counterpart is not called at all.
            return null
        ptr = real(*args)
        if ptr:
            if ptr in refs:
                made(ptr, kind)
            else:
                refs[ptr] = 1
                kind_of[ptr] = (ptr, kind)
                counts[kind] += 1
        return ptr

    return constructor


def _wrap_recording(counted: Callable[..., Any], books: _Books) -> Callable[..., Any]:
    """``counted`` (a wrapped constructor) that also keeps the Python stack of what it made."""
    refs, stacks, getframe = books.refs, books.stacks, sys._getframe

    def constructor(*args: Any) -> Any:
        ptr = counted(*args)
        if ptr and ptr in refs:
            books.stacks_made += 1
            stacks[ptr] = (books.stacks_made, python_stack(getframe(1)))
        return ptr

    return constructor


def _wrap_destructor(real: Callable[..., Any], books: _Books) -> Callable[..., Any]:
    refs, kind_of, counts, owned, release = (
        books.refs,
        books.kind_of,
        books.counts,
        books.owned,
        books.release,
    )

    def destructor(ptr: Any) -> Any:
        # Books first: once freed, the address may be handed out again.
        held = refs.get(ptr)
        if held is not None:
            if held == 1 and ptr not in owned:
                if refs.pop(ptr, None) is not None:
                    counts[kind_of.pop(ptr)[1]] -= 1
            else:
                release(ptr)
        return real(ptr)

    return destructor


def _wrap_up_ref(real: Callable[..., Any], books: _Books) -> Callable[..., Any]:
    def up_ref(ptr: Any) -> Any:
        result = real(ptr)
        if result == 1:
            books.up_ref(ptr)
        return result

    return up_ref


def _wrap_transfer(
    real: Callable[..., Any], books: _Books, spec: tuple[int, tuple[int, ...], bool]
) -> Callable[..., Any]:
    owner_at, handed_at, checks_result = spec

    def transfer(*args: Any) -> Any:
        result = real(*args)
        if not checks_result or result == 1:
            books.transfer(args[owner_at], [args[i] for i in handed_at])
        return result

    return transfer


def _null() -> Any:
    """What a constructor returns when a failure is injected: NULL, as a cffi pointer.

    Callers' ``ptr == ffi.NULL`` and ``not ptr`` checks then see it (cffi
    compares pointers by address, whichever FFI made them).  Imported here,
    when a binding is interposed on, so that this module needs no cryptography.
    """
    from cryptography.hazmat.bindings.openssl.binding import Binding

    return Binding.ffi.NULL


def _unseen(lib: Any) -> tuple[dict[str, list[str]], list[str]]:
    """The types ``lib`` cannot make or free, with the functions it lacks; the missing essentials.

    A type with constructors but no destructor would look leaked on every
    attempt, one with no constructor would always count 0: neither is counted.
    """
    unseen: dict[str, list[str]] = {}
    for kind, made in CONSTRUCTORS.items():
        freed = DESTRUCTORS[kind]
        if not any(hasattr(lib, n) for n in made):
            unseen.setdefault(kind, []).append(" / ".join(made))
        if not any(hasattr(lib, n) for n in freed):
            unseen.setdefault(kind, []).append(" / ".join(freed))
    missing = [name for kind in ESSENTIAL for name in unseen.get(kind, ())]
    return unseen, missing


class _LibProxy:
    """Stands in for the binding's ``lib``: wrapped functions, else the real attribute."""

    def __init__(self, real: Any, wrapped: dict[str, Callable[..., Any]]) -> None:
        self.__dict__["_real"] = real
        self.__dict__.update(wrapped)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.__dict__["_real"], name)
        # Cache it: the next lookup is a plain instance-dict hit, so code that
        # is not counted pays nothing after its first call.
        self.__dict__[name] = value
        return value

    def __dir__(self) -> list[str]:
        return dir(self.__dict__["_real"])


def _namespaces(module: object) -> list[dict[str, Any]]:
    """The global namespaces behind a ``sys.modules`` entry.

    Usually just the module's ``__dict__``; but a module may be replaced in
    ``sys.modules`` by a wrapper (pyOpenSSL's ``OpenSSL.crypto`` is wrapped by
    cryptography's deprecation helper) whose functions still read their globals
    from the wrapped module, so that one is rebound too.
    """
    namespace = getattr(module, "__dict__", None)
    if not isinstance(namespace, dict):
        return []
    found = [namespace]
    name = namespace.get("__name__")
    for value in namespace.values():
        if isinstance(value, types.ModuleType) and value is not module and value.__name__ == name:
            found.append(vars(value))
    return found


class _Interposer:
    """The proxy for one binding, installed while any ledger on it is started."""

    def __init__(self, lib: Any) -> None:
        self.lib = lib
        unseen, self.missing = _unseen(lib)
        kinds = [kind for kind in CONSTRUCTORS if kind not in unseen]
        self.books = _Books(kinds)
        wrapped: dict[str, Callable[..., Any]] = {}
        for kind in kinds:
            for name in CONSTRUCTORS[kind]:
                if hasattr(lib, name):
                    wrapped[name] = _wrap_constructor(getattr(lib, name), self.books, kind)
        #: The recording constructors, swapped in while :attr:`recorders` > 0.
        self._recording = {
            name: _wrap_recording(wrapped[name], self.books)
            for names in CONSTRUCTORS.values()
            for name in names
            if name in wrapped
        }
        self._counting = {name: wrapped[name] for name in self._recording}
        self.recorders = 0
        for names in DESTRUCTORS.values():
            for name in names:
                if hasattr(lib, name):
                    wrapped[name] = _wrap_destructor(getattr(lib, name), self.books)
        for name in UP_REFS:
            if hasattr(lib, name):
                wrapped[name] = _wrap_up_ref(getattr(lib, name), self.books)
        for name, spec in TRANSFERS.items():
            if hasattr(lib, name):
                wrapped[name] = _wrap_transfer(getattr(lib, name), self.books, spec)
        self.proxy = _LibProxy(lib, wrapped)
        self.users = 0
        # Every (namespace, name) ever found bound to the lib.  Kept across
        # uninstall, so starting again rebinds a short list instead of
        # walking every module (5 ms, paid per assert_no_leaks() call).
        self._bindings: list[tuple[dict[str, Any], str]] = []
        self._modules_seen: tuple[int, str | None] = (0, None)

    def install(self) -> None:
        self.users += 1
        if self.users == 1:
            self._swap(self.lib, self.proxy)
        self.rescan()

    def _swap(self, old: Any, new: Any) -> None:
        for namespace, name in self._bindings:
            if namespace.get(name) is old:
                namespace[name] = new

    def rescan(self) -> None:
        """Rebind the lib in modules imported since the last scan (cheap when none were)."""
        if self.users <= 0:
            return
        # sys.modules keeps insertion order: its size and newest entry change
        # whenever a module is imported, at the cost of two lookups.
        seen = (len(sys.modules), next(reversed(sys.modules), None))
        if seen == self._modules_seen:
            return
        self._modules_seen = seen
        known = {(id(ns), name) for ns, name in self._bindings}
        for module in list(sys.modules.values()):
            for namespace in _namespaces(module):
                for name, value in list(namespace.items()):
                    if value is self.lib:
                        namespace[name] = self.proxy
                        if (id(namespace), name) not in known:
                            self._bindings.append((namespace, name))

    def uninstall(self) -> None:
        self.users -= 1
        if self.users == 0:
            self._swap(self.proxy, self.lib)

    def begin_stacks(self) -> int:
        """Swap the recording constructors in (for the first recorder); return the mark."""
        self.recorders += 1
        if self.recorders == 1:
            self.proxy.__dict__.update(self._recording)
        return self.books.stacks_made

    def end_stacks(self, mark: int) -> list[LostStack]:
        """The objects made since ``mark`` still live, by stack; the last recorder swaps back."""
        books = self.books
        with books.lock:
            recorded = list(books.stacks.items())
            live = [made for ptr, made in recorded if made[0] > mark and ptr in books.refs]
        by_stack: dict[tuple[Frame, ...], list[int]] = {}
        for order, frames in live:
            seen = by_stack.setdefault(frames, [0, order])
            seen[0] += 1
            seen[1] = min(seen[1], order)
        self.recorders = max(0, self.recorders - 1)
        if self.recorders == 0:
            self.proxy.__dict__.update(self._counting)
            books.stacks.clear()
        # Objects have no size here: blocks are objects, bytes are unknown (0).
        return [LostStack(n, 0, first, frames) for frames, (n, first) in by_stack.items()]


_interposers: dict[int, _Interposer] = {}


def _interposer_for(lib: Any) -> _Interposer:
    found = _interposers.get(id(lib))
    if found is None:
        found = _interposers[id(lib)] = _Interposer(lib)
    return found


def _default_lib() -> Any:
    """cryptography's ``Binding.lib``: the object pyOpenSSL binds as ``OpenSSL.SSL._lib``.

    So it is from pyOpenSSL 23 (cryptography 41) to today.  pyOpenSSL is
    imported first when it is installed, so that its module globals exist to
    be rebound; code on cryptography's binding alone needs no pyOpenSSL.
    """
    try:
        from cryptography.hazmat.bindings.openssl.binding import Binding
    except ImportError:
        raise LedgerUnavailable(
            f"cryptography is not installed for {sys.executable}: no binding to count "
            "OpenSSL objects through"
        ) from None
    with contextlib.suppress(ImportError):
        import OpenSSL.SSL  # noqa: F401 - its module globals, to be rebound
    lib = getattr(Binding, "lib", None)
    if lib is None:  # an old binding that loads its lib when first instantiated
        lib = Binding().lib
    return lib


class OpenSSLObjectLedger:
    """Live OpenSSL objects by type, made through cryptography's cffi binding.

    ``lib`` is the binding object to interpose on (default: the one pyOpenSSL
    uses).  Counters are named after the OpenSSL types in :data:`CONSTRUCTORS`.
    """

    name = "openssl-objects"
    #: It counts calls through one binding only: probed on each target (see Ledger).
    stack_bound = True
    scope = "the OpenSSL objects made through cryptography's binding (pyOpenSSL's)"

    def __init__(self, lib: Any = None) -> None:
        self._lib = lib
        self._interposer: _Interposer | None = None
        self._marks: list[int] = []

    def start(self) -> None:
        if self._interposer is not None:
            return
        interposer = _interposer_for(self._lib if self._lib is not None else _default_lib())
        if interposer.missing:
            raise LedgerUnavailable(
                "the OpenSSL binding cannot make or free the objects of a TLS init path "
                f"(it lacks {', '.join(interposer.missing)}): no OpenSSL objects counted"
            )
        self._interposer = interposer
        self._interposer.install()

    def stop(self) -> None:
        if self._interposer is not None:
            while self._marks:
                self._interposer.end_stacks(self._marks.pop())
            self._interposer.uninstall()
            self._interposer = None

    def snapshot(self) -> Counts:
        return dict(self._books().counts)

    def _books(self) -> _Books:
        if self._interposer is None:
            raise RuntimeError("the ledger was not started")
        self._interposer.rescan()
        return self._interposer.books

    # Allocation-failure injection at the binding level: "allocations" are
    # the counted constructors (SSL_CTX_new, SSL_new, BIO_new, ...), and a
    # failed one returns NULL as OpenSSL does when it runs out of memory.

    def reset_allocations(self) -> None:
        """Start counting constructor calls from zero."""
        self._books().faults[0] = 0

    def allocations(self) -> int:
        """Constructor calls since :meth:`reset_allocations`."""
        return self._books().faults[0]

    def fail_at(self, k: int) -> None:
        """Make the k-th constructor call from now return NULL (0: none)."""
        faults = self._books().faults
        faults[0] = 0
        faults[1] = k

    # Caller stacks (the oracle's StackRecorder protocol), for its one
    # attribution replay of a leak: ordinary attempts never pay for them.

    def begin_stacks(self) -> int:
        """Keep the Python stack of every object made from now; return the mark."""
        if self._interposer is None:
            raise RuntimeError("the ledger was not started")
        mark = self._interposer.begin_stacks()
        self._marks.append(mark)
        return mark

    def end_stacks(self, mark: int) -> list[LostStack]:
        """Stop keeping stacks; the objects made since ``mark`` still live, by stack.

        Each :class:`~tlsleak.ledgers.symbols.LostStack` counts objects as
        its blocks (bytes 0), earliest made first by its ``first``.
        """
        if self._interposer is None:
            raise RuntimeError("the ledger was not started")
        if mark in self._marks:
            self._marks.remove(mark)
        return self._interposer.end_stacks(mark)
