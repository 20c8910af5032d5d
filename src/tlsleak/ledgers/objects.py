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
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Callable, Iterable
from typing import Any, Final

from tlsleak.ledgers.base import Counts

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


class _Node:
    __slots__ = ("kind", "owned", "refs")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.refs = 1
        self.owned: list[Any] = []


class _Books:
    """Live objects of one binding, shared by every ledger started on it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # reentrant: a free can run from a gc callback
        self.live: dict[Any, _Node] = {}
        self.counts: dict[str, int] = dict.fromkeys(CONSTRUCTORS, 0)
        self.unseen_frees = 0

    def made(self, ptr: Any, kind: str) -> None:
        with self.lock:
            old = self.live.get(ptr)
            if old is not None:
                # The address was reused, so the old object was freed by a path
                # we do not see (an owner we don't track); count it gone.
                self.unseen_frees += 1
                self._drop(ptr, old)
            self.live[ptr] = _Node(kind)
            self.counts[kind] += 1

    def release(self, ptr: Any) -> None:
        with self.lock:
            node = self.live.get(ptr)
            if node is None:
                return
            node.refs -= 1
            if node.refs <= 0:
                self._drop(ptr, node)

    def _drop(self, ptr: Any, node: _Node) -> None:
        del self.live[ptr]
        self.counts[node.kind] -= 1
        for child in node.owned:
            self.release(child)

    def up_ref(self, ptr: Any) -> None:
        with self.lock:
            node = self.live.get(ptr)
            if node is not None:
                node.refs += 1

    def transfer(self, owner: Any, handed: Iterable[Any]) -> None:
        with self.lock:
            owner_node = self.live.get(owner)
            seen = []
            for ptr in handed:
                if not ptr or ptr in seen:
                    continue
                seen.append(ptr)
                if ptr not in self.live:
                    continue
                if owner_node is None:
                    # Handed to an object made before counting began: it leaves
                    # the books with that owner.
                    self.release(ptr)
                elif ptr not in owner_node.owned:
                    owner_node.owned.append(ptr)


def _wrap_constructor(real: Callable[..., Any], books: _Books, kind: str) -> Callable[..., Any]:
    def constructor(*args: Any) -> Any:
        ptr = real(*args)
        if ptr:
            books.made(ptr, kind)
        return ptr

    return constructor


def _wrap_destructor(real: Callable[..., Any], books: _Books) -> Callable[..., Any]:
    def destructor(ptr: Any) -> Any:
        # Books first: once freed, the address may be handed out again.
        books.release(ptr)
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
        self.books = _Books()
        wrapped: dict[str, Callable[..., Any]] = {}
        for kind, names in CONSTRUCTORS.items():
            for name in names:
                if hasattr(lib, name):
                    wrapped[name] = _wrap_constructor(getattr(lib, name), self.books, kind)
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
        self._patched: list[tuple[dict[str, Any], str]] = []
        self._modules_seen = 0

    def install(self) -> None:
        self.users += 1
        self.rescan()

    def rescan(self) -> None:
        """Rebind the lib in modules imported since the last scan (cheap when none were)."""
        if self.users <= 0 or len(sys.modules) == self._modules_seen:
            return
        self._modules_seen = len(sys.modules)
        for module in list(sys.modules.values()):
            for namespace in _namespaces(module):
                for name, value in list(namespace.items()):
                    if value is self.lib:
                        namespace[name] = self.proxy
                        self._patched.append((namespace, name))

    def uninstall(self) -> None:
        self.users -= 1
        if self.users > 0:
            return
        for namespace, name in self._patched:
            if namespace.get(name) is self.proxy:
                namespace[name] = self.lib
        self._patched.clear()
        self._modules_seen = 0


_interposers: dict[int, _Interposer] = {}


def _interposer_for(lib: Any) -> _Interposer:
    found = _interposers.get(id(lib))
    if found is None:
        found = _interposers[id(lib)] = _Interposer(lib)
    return found


def _default_lib() -> Any:
    # pyOpenSSL binds this very object (OpenSSL._util.lib is Binding.lib).
    import OpenSSL.SSL  # noqa: F401 - make sure its module globals exist to be rebound
    from cryptography.hazmat.bindings.openssl.binding import Binding

    return Binding.lib


class OpenSSLObjectLedger:
    """Live OpenSSL objects by type, made through cryptography's cffi binding.

    ``lib`` is the binding object to interpose on (default: the one pyOpenSSL
    uses).  Counters are named after the OpenSSL types in :data:`CONSTRUCTORS`.
    """

    name = "openssl-objects"

    def __init__(self, lib: Any = None) -> None:
        self._lib = lib
        self._interposer: _Interposer | None = None

    def start(self) -> None:
        if self._interposer is not None:
            return
        self._interposer = _interposer_for(self._lib if self._lib is not None else _default_lib())
        self._interposer.install()

    def stop(self) -> None:
        if self._interposer is not None:
            self._interposer.uninstall()
            self._interposer = None

    def snapshot(self) -> Counts:
        if self._interposer is None:
            raise RuntimeError("snapshot() of a ledger that was not started")
        self._interposer.rescan()
        return dict(self._interposer.books.counts)
