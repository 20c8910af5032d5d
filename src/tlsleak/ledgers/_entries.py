"""What Python calls a C function of an extension module by: ``cygrpc.server_credentials_ssl``.

A stripped extension names its functions only by their starts
(:mod:`tlsleak.ledgers._elf`), which tell a maintainer nothing.  But the
interpreter itself knows where to call: every function and method a
module offers Python has a ``PyMethodDef`` holding the C function's address
and its name, and every class its ``tp_new`` and ``tp_init`` slots.  Read
from the modules loaded from that object, they name the frame where Python
entered it: ``cygrpc.server_credentials_ssl``, ``cygrpc.Server()``.

Only for display (frames of a stack): a function Python does not call has
no such name, and names are read from the live objects of this process.
Reading a C structure through ctypes is safe only where its layout is
known, so this runs on CPython builds whose object header is the usual one
(no free-threaded or trace-refs build), reads ``PyMethodDef`` only from the
types that embed it at a known place (builtin functions, method
descriptors, Cython functions outside the limited API), and keeps a name
only when the name in the C structure is the object's own (a check of the
layout before its function pointer is trusted).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import sysconfig
import types
from typing import Final

__all__ = ["python_names"]

_POINTER: Final = ctypes.sizeof(ctypes.c_void_p)
#: The object header: ob_refcnt, ob_type (PyObject_HEAD).
_HEAD: Final = 2 * _POINTER
#: PyTypeObject: the variable header (+ ob_size), then tp_name...: tp_init and tp_new.
_TP_INIT: Final = _HEAD + _POINTER + 34 * _POINTER
_TP_NEW: Final = _HEAD + _POINTER + 36 * _POINTER
#: PyMethodDescrObject: the header, d_type, d_name, d_qualname, then d_method.
_D_METHOD: Final = _HEAD + 3 * _POINTER
#: Functions whose object starts with a PyCFunctionObject (m_ml right after the header).
_FUNCTIONS: Final = frozenset(
    {"builtin_function_or_method", "cython_function_or_method", "fused_cython_function"}
)


def _layout_known() -> bool:
    """Whether this interpreter's objects have the layout the offsets above assume."""
    return (
        sys.implementation.name == "cpython"
        and object.__basicsize__ == _HEAD
        and not sysconfig.get_config_var("Py_GIL_DISABLED")
        and not hasattr(sys, "getobjects")  # Py_TRACE_REFS: a longer header
    )


def _pointer(address: int) -> int:
    return int(ctypes.c_void_p.from_address(address).value or 0)


def _method(definition: int, name: str) -> int:
    """``ml_meth`` of the PyMethodDef at ``definition`` if its ``ml_name`` is ``name``, else 0."""
    if not definition:
        return 0
    text = ctypes.c_char_p.from_address(definition).value
    if text is None or text.decode(errors="replace") != name:
        return 0
    return _pointer(definition + _POINTER)


def _names_in(module: types.ModuleType, abi3: bool) -> dict[int, str]:
    """C function address -> Python name, for what ``module`` offers Python."""
    found: dict[int, str] = {}
    prefix = module.__name__.rpartition(".")[2]
    for attribute, value in list(vars(module).items()):
        kind = type(value).__name__
        if kind in _FUNCTIONS and (kind == "builtin_function_or_method" or not abi3):
            name = str(getattr(value, "__name__", attribute))
            if at := _method(_pointer(id(value) + _HEAD), name):
                found.setdefault(at, f"{prefix}.{name}")
        elif isinstance(value, type) and value.__module__ == module.__name__:
            qualified = f"{prefix}.{value.__qualname__}"
            for offset, suffix in ((_TP_NEW, "()"), (_TP_INIT, ".__init__")):
                if at := _pointer(id(value) + offset):
                    found.setdefault(at, qualified + suffix)
            for method, member in list(vars(value).items()):
                at = 0
                kind = type(member).__name__
                if kind == "method_descriptor":
                    at = _method(_pointer(id(member) + _D_METHOD), method)
                elif kind in _FUNCTIONS and not abi3:  # Cython 3 binds methods as functions
                    at = _method(_pointer(id(member) + _HEAD), str(member.__name__))
                if at:
                    found.setdefault(at, f"{qualified}.{method}")
    return found


@functools.lru_cache(maxsize=64)
def python_names(path: str, base: int) -> dict[int, str]:
    """Offset in the object at ``path`` (loaded at ``base``) -> the name Python calls it by.

    Empty where the layout is not known, or no loaded module comes from
    ``path``.  Kept for the life of the process, as the frames' names are.
    """
    if not _layout_known():
        return {}
    real = os.path.realpath(path)
    found: dict[int, str] = {}
    for module in list(sys.modules.values()):
        where = getattr(module, "__file__", None)
        if not isinstance(where, str) or os.path.realpath(where) != real:
            continue
        for address, name in _names_in(module, real.endswith(".abi3.so")).items():
            if address >= base:
                found.setdefault(address - base, name)
    return found
