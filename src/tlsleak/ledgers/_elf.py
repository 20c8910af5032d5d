"""Function starts and build ids read from an ELF file: names for stripped code.

A stripped shared object (grpcio's ``cygrpc`` extension: one dynamic
symbol, no ``.symtab``) still carries its unwind tables, because C++
exceptions and ``backtrace`` need them: ``.eh_frame_hdr`` (the segment
``PT_GNU_EH_FRAME``) holds a table, sorted by address, of the first
instruction of every function that has unwind info.  The start of the
function enclosing an address is a name for it that is the same wherever
the object is loaded (ASLR moves the whole object) and differs between
functions; it moves when the object is rebuilt, so it goes with the
object's build id (``NT_GNU_BUILD_ID``, or a hash of the file when it has
none) to tell "another build" from "another function".

Small on purpose: only what a name needs (the program headers, one note,
one table), read with :mod:`struct`, for 32- and 64-bit little- and
big-endian files.  Anything unexpected (not ELF, no such segment, a table
encoding other than the one every linker writes) gives None, never an
exception: a frame then just has no name of this kind.  Why not pyelftools
or LIEF: a dependency for some sixty lines, in a tool that installs next to
any project's test suite.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import struct
from dataclasses import dataclass

__all__ = ["FunctionTable", "function_table"]

_PT_NOTE = 4
_PT_GNU_EH_FRAME = 0x6474E550
_NT_GNU_BUILD_ID = 3
_SHT_SYMTAB = 2
_STT_FUNC = 2
#: DW_EH_PE_datarel | DW_EH_PE_sdata4: what GNU ld, gold, lld and mold write.
_TABLE_DATAREL_SDATA4 = 0x3B
_OMIT = 0xFF


@dataclass(frozen=True)
class FunctionTable:
    """The function starts of one ELF file (virtual addresses, sorted) and its build id."""

    starts: tuple[int, ...]
    #: ``NT_GNU_BUILD_ID`` in hex, else ``sha256:`` and the file's hash (first 16 digits).
    build: str
    #: The symbol table's functions (start, size, name), sorted; empty when stripped.
    functions: tuple[tuple[int, int, str], ...] = ()

    def symbol(self, vaddr: int) -> tuple[str, int, int] | None:
        """(name, start, size) of the symbol table's function holding ``vaddr``, if any."""
        at = bisect.bisect_right(self.functions, (vaddr, 1 << 64)) - 1
        if at < 0:
            return None
        start, size, name = self.functions[at]
        return (name, start, size) if start <= vaddr < start + size else None

    def enclosing(self, vaddr: int) -> tuple[int, int] | None:
        """(start, end) of the function holding ``vaddr``, or None when no function does.

        The end is the next function's start (an upper bound: padding
        between functions counts as the earlier one); past the last start
        there is no bound, so no function.
        """
        at = bisect.bisect_right(self.starts, vaddr) - 1
        if at < 0 or at + 1 >= len(self.starts):
            return None
        return self.starts[at], self.starts[at + 1]


def _headers(data: bytes) -> tuple[str, bool, list[tuple[int, int, int, int]]] | None:
    """(struct byte order, 64-bit, [(type, offset, vaddr, filesz)]) of the program headers."""
    if len(data) < 52 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
    if wide:
        (phoff,) = struct.unpack_from(order + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 54)
        layout, fields = order + "IIQQQQ", (0, 2, 3, 5)  # type, flags, offset, vaddr, paddr, filesz
    else:
        (phoff,) = struct.unpack_from(order + "I", data, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 42)
        layout, fields = order + "IIIII", (0, 1, 2, 4)  # type, offset, vaddr, paddr, filesz
    size = struct.calcsize(layout)
    if phentsize < size or phoff + phnum * phentsize > len(data):
        return None
    found = []
    for i in range(phnum):
        row = struct.unpack_from(layout, data, phoff + i * phentsize)
        kind, offset, vaddr, size = (int(row[f]) for f in fields)
        found.append((kind, offset, vaddr, size))
    return order, wide, found


def _build_id(data: bytes, order: str, notes: list[tuple[int, int]]) -> str | None:
    """The hex ``NT_GNU_BUILD_ID`` in the note segments ``notes`` [(offset, size)], if any."""
    for offset, size in notes:
        at, end = offset, min(offset + size, len(data))
        while at + 12 <= end:
            namesz, descsz, kind = struct.unpack_from(order + "III", data, at)
            name_at = at + 12
            desc_at = name_at + (namesz + 3) // 4 * 4
            if kind == _NT_GNU_BUILD_ID and data[name_at : name_at + namesz] == b"GNU\0":
                return data[desc_at : desc_at + descsz].hex() or None
            at = desc_at + (descsz + 3) // 4 * 4
    return None


def _starts(data: bytes, order: str, offset: int, vaddr: int, size: int) -> tuple[int, ...]:
    """The function starts in the ``.eh_frame_hdr`` at file ``offset`` (loaded at ``vaddr``)."""
    hdr = data[offset : offset + size]
    if len(hdr) < 12 or hdr[0] != 1 or hdr[3] != _TABLE_DATAREL_SDATA4 or hdr[2] == _OMIT:
        return ()
    # The pointer to .eh_frame comes first; only its width matters here
    # (4 bytes for the udata4/sdata4 forms every linker writes).
    if hdr[1] & 0x0F not in (0x03, 0x0B):
        return ()
    count_enc = hdr[2] & 0x0F
    if count_enc not in (0x03, 0x0B):  # udata4, sdata4
        return ()
    (count,) = struct.unpack_from(order + ("I" if count_enc == 0x03 else "i"), hdr, 8)
    if count <= 0 or 12 + count * 8 > len(hdr):
        return ()
    pairs = struct.unpack_from(f"{order}{2 * count}i", hdr, 12)
    # datarel: relative to the start of .eh_frame_hdr; the table is sorted.
    return tuple(vaddr + pairs[i] for i in range(0, 2 * count, 2))


def _functions(data: bytes, order: str, wide: bool) -> tuple[tuple[int, int, str], ...]:
    """The defined functions of the ``.symtab`` section (start, size, name), sorted; () if none.

    Found through the section headers (``SHT_SYMTAB``, its string table by
    ``sh_link``), which a stripped object keeps but without that section.
    """
    if wide:
        (shoff,) = struct.unpack_from(order + "Q", data, 40)
        shentsize, shnum = struct.unpack_from(order + "HH", data, 58)
        header, symbol = order + "IIQQQQIIQQ", order + "IBBHQQ"
    else:
        (shoff,) = struct.unpack_from(order + "I", data, 32)
        shentsize, shnum = struct.unpack_from(order + "HH", data, 46)
        header, symbol = order + "IIIIIIIIII", order + "IIIBBH"
    if not shoff or shentsize < struct.calcsize(header) or shoff + shnum * shentsize > len(data):
        return ()
    sections = [struct.unpack_from(header, data, shoff + i * shentsize) for i in range(shnum)]
    found = []
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != _SHT_SYMTAB or entsize < struct.calcsize(symbol) or link >= shnum:
            continue
        strings_at, strings_size = sections[link][4], sections[link][5]
        strings = data[strings_at : strings_at + strings_size]
        for at in range(offset, min(offset + size, len(data)) - entsize + 1, entsize):
            row = struct.unpack_from(symbol, data, at)
            if wide:
                name, info, _other, shndx, value, length = row
            else:
                name, value, length, info, _other, shndx = row
            if info & 0x0F == _STT_FUNC and shndx != 0 and length > 0:
                end = strings.find(b"\0", name)
                text = strings[name : end if end >= 0 else None].decode(errors="replace")
                if text:
                    found.append((value, length, text))
    return tuple(sorted(found))


@functools.lru_cache(maxsize=64)
def function_table(path: str) -> FunctionTable | None:
    """The function starts and build id of the ELF file at ``path``; None when it has no table.

    Read once per path for the life of the process (a worker's libraries
    stay loaded).  Never raises: an unreadable or odd file has no table.
    """
    try:
        with open(path, "rb") as elf:
            data = elf.read()
        parsed = _headers(data)
        if parsed is None:
            return None
        order, wide, segments = parsed
        starts: tuple[int, ...] = ()
        notes = []
        for kind, offset, vaddr, size in segments:
            if kind == _PT_GNU_EH_FRAME and not starts:
                starts = _starts(data, order, offset, vaddr, size)
            elif kind == _PT_NOTE:
                notes.append((offset, size))
        functions = _functions(data, order, wide)
        if not starts and not functions:
            return None
        build = _build_id(data, order, notes)
        if build is None:
            build = "sha256:" + hashlib.sha256(data).hexdigest()[:16]
        return FunctionTable(starts, build, functions)
    except (OSError, struct.error, ValueError, MemoryError):
        return None
