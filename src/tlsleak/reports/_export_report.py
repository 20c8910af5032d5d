"""``REPORT.md`` of an export: a stored finding told the way an upstream issue reads.

What went wrong and how much per attempt, where (the caller, the first block
lost, the stack without tlsleak's own driving frames, the allocation sites),
the input as files, how to run the standalone reproducer, what it prints,
and for an allocation-failure finding, that the reproducer can't make the
allocation fail.  Rendering only: nothing here reads or writes files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from tlsleak._version import __version__
from tlsleak.check.findings import LibraryRecord, StoredFinding
from tlsleak.check.oracle import Finding, FindingKind
from tlsleak.reports._export_stacks import STACK_PACKAGES

__all__ = ["report"]

#: Stack frames shown at most.
_FRAMES: Final = 12
#: Frames of tlsleak's heap interposer, at the innermost end of a C stack.
_SHIM_FRAMES: Final = ("libtlsleak_",)
#: Frames of what drove the attempt (tlsleak, the interpreter, ctypes calling
#: a C library): past the caller they mean nothing upstream.
_DRIVER_FRAMES: Final = (
    "tlsleak/",
    "<frozen ",
    "libffi",
    "_ctypes",
    "libpython",
    "python3",
)

_NEEDS: Final = {
    "control": "Python 3 with `cryptography` (the script calls its OpenSSL binding)",
    "pyopenssl": "Python 3 with `pyOpenSSL`",
    "ssl": "Python 3 (the standard `ssl` module)",
    "callable": "Python 3 and the module under test (run it where that module imports)",
    **{
        kind: f"Python 3 with `{package}` (`pip install {package}`)"
        for kind, package in STACK_PACKAGES.items()
    },
}

_PY_OUTPUT: Final = """\
target: {target} ({mode} mode){stack}
outcome: {outcome}
growth since the warm-up (rss and heap in bytes; heap = mallinfo2 in use):
round  attempts          rss         heap   fds    heap/1000     rss/1000  fds/1000
    1      1000    +NNNNNNNN    +NNNNNNNN    +0    +NNNNNNNN    +NNNNNNNN      +0.0
  ...
verdict: grows steadily (heap in use +NNNNN bytes per attempt): exit status 1
"""

_C_OUTPUT: Final = """\
library: {target} ({mode} mode)
outcome: returned N: <tls_last_error()>
growth since the warm-up (heap = mallinfo2 bytes in use; blocks = live mallocs):
round  attempts         heap    blocks    heap/1000 blocks/1000
    1      1000    +NNNNNNNN    +NNNNN    +NNNNNNNN     +NNNNN
  ...
verdict: grows every round (+NNNNN blocks per 1000 attempts): exit status 1
"""


def report(
    stored: StoredFinding,
    kind: str,
    title: str,
    library: LibraryRecord | None,
    names: Mapping[str, str],
    stack_version: str | None = None,
) -> str:
    """The Markdown text of REPORT.md; ``names`` maps case fields to the files holding them.

    ``stack_version``: for a stack target, its package's version where the
    export ran (a finding folder does not record the one it was made with).
    """
    finding = stored.finding
    parts = [
        f"# {title}\n",
        f"Found by tlsleak {__version__} (finding `{stored.folder.name}`).\n",
        _what(finding),
        _where(finding),
        _input(stored, kind, names),
        _run(stored, kind, library, stack_version),
    ]
    if finding.fail_at is not None:
        parts.append(_fail_point(stored, driver=library is not None))
    return "\n".join(part for part in parts if part)


def _what(finding: Finding) -> str:
    lines = ["## What happens\n"]
    lines.append(f"- kind: **{finding.kind}**; the attempt: {finding.outcome.describe()}")
    if finding.delta:
        lines.append(f"- growth per attempt (confirmed on {finding.replays} replays):")
        lines += [f"  - `{name}`: {value:+d}" for name, value in finding.delta.items()]
    if finding.errors_left:
        left = "; ".join(str(e) for e in finding.errors_left)
        lines.append(f"- left on OpenSSL's error queue: {left}")
    lines.append(f"- signature: `{finding.signature}`")
    if finding.kind in (FindingKind.LEAK, FindingKind.CYCLE):
        lines.append(
            "\nThe counts are tlsleak's: typed OpenSSL objects, heap blocks and bytes, "
            "file descriptors live after each attempt, against a baseline."
        )
    return "\n".join(lines) + "\n"


def _where(finding: Finding) -> str:
    lines = []
    if finding.caller:
        lines.append(f"- caller (the init path's own line that made it): `{finding.caller}`")
    if finding.root_site:
        lines.append(f"- first block lost was allocated at `{finding.root_site}`")
    for site in finding.sites[:5]:
        lines.append(f"- allocation site: `{site}`")
    frames = _frames(finding)
    if frames:
        lines.append("- stack of the first thing lost, innermost first:\n")
        lines += ["  ```", *(f"  {f}" for f in frames[:_FRAMES]), "  ```"]
    return "## Where\n\n" + "\n".join(lines) + "\n" if lines else ""


def _frames(finding: Finding) -> list[str]:
    """The stack of the first thing lost, innermost first, without tlsleak's frames.

    The interposer's own frame goes; so does what called the init path: the
    frames past the caller (the target's own line) from the first driver
    frame on, or every driver frame when the caller is not in the stack.
    """
    frames = [f for f in finding.stack if not f.startswith(_SHIM_FRAMES)]
    if finding.caller not in frames:
        return [f for f in frames if not f.startswith(_DRIVER_FRAMES)][:_FRAMES]
    cut = frames.index(finding.caller) + 1
    for frame in frames[cut:]:
        if frame.startswith(_DRIVER_FRAMES):
            break
        cut += 1
    return frames[:cut][:_FRAMES]


def _input(stored: StoredFinding, kind: str, names: Mapping[str, str]) -> str:
    case = stored.reproducer
    lines = ["## The input\n", f"Mode: {case.mode.value}.", ""]
    if names:
        lines += ["| file | bytes | what |", "| --- | --- | --- |"]
        for field, name in names.items():
            data: bytes = getattr(case, field)
            lines.append(f"| `{name}` | {len(data)} | {field.replace('_', ' ')} |")
        lines.append("")
    else:
        lines.append("Every blob is empty (nothing configured).\n")
    if case.labels:
        lines.append(f"tlsleak's defect labels: {', '.join(case.labels)}.\n")
    if kind == "c" and (case.password or case.server_name):
        lines.append(
            "The case also had a password or server name, which the C ABI does not "
            "carry: not written.\n"
        )
    if case.key:
        lines.append(
            f"**`{names['key']}` is a private key (test material, made by tlsleak): keep the "
            "folder private (it is 0700, its files 0600) and delete it when done.**"
        )
    else:
        lines.append("The input has no key; the folder is private (0700, files 0600) anyway.")
    return "\n".join(lines) + "\n"


def _run(
    stored: StoredFinding, kind: str, library: LibraryRecord | None, stack_version: str | None
) -> str:
    finding, mode = stored.finding, stored.reproducer.mode.value
    if library is not None:
        how = [
            "Needs a C compiler and glibc 2.33 or later (`mallinfo2`); tlsleak is not needed.\n",
            "```sh",
            "make    # or: cc -O1 -Wall -rdynamic -o reproduce reproduce.c -ldl",
            "./reproduce [LIBRARY [ROUNDS [ATTEMPTS]]]",
            "```\n",
            f"LIBRARY defaults to `{library.path}`, where the finding was made"
            + (f" (sha256 `{library.sha256[:12]}`)." if library.sha256 else "."),
            f"The driver calls its `{library.symbol}()` (docs: tlsleak's c-abi.md) on the blobs, "
            "which it holds as arrays, 200 times to warm up, then ATTEMPTS (1000) times per "
            "round. Expected output:\n",
            "```",
            _C_OUTPUT.format(target=library.path, mode=mode).rstrip(),
            "```",
        ]
        measure = "`heap` and `blocks`"
    else:
        how = [
            f"Needs {_NEEDS[kind]}; tlsleak is not needed.{_versions(kind, stack_version)}\n",
            "```sh",
            "python3 reproduce.py [--rounds 5] [--attempts 1000] [--warmup 200]",
            "```\n",
            "The script holds the init path and runs it on the files here. Expected output:\n",
            "```",
            _PY_OUTPUT.format(
                target=finding.target,
                mode=mode,
                stack=f"\nstack: {STACK_PACKAGES[kind]} N.N.N" if kind in STACK_PACKAGES else "",
                outcome=_expected_outcome(finding),
            ).rstrip(),
            "```",
        ]
        measure = "`heap` and `rss`"
    if finding.fail_at is not None and not (library is not None and stored.fail_point):
        return "## Reproduce\n\n" + "\n".join(how) + "\n"  # see "Allocation failure needed"
    tail = (
        f"\nWith the leak, {measure} grow every round, by about the per-attempt growth "
        "above times 1000 per 1000 attempts (`heap/1000`), and it exits with status 1; "
        "once fixed, they stay near zero and it exits 0 (`verdict: no steady growth`)."
        if finding.kind in (FindingKind.LEAK, FindingKind.CYCLE)
        else f"\nA {finding.kind} finding is not a leak: the outcome line (or the process "
        "ending) shows it; the growth columns show nothing in particular."
    )
    return "## Reproduce\n\n" + "\n".join(how) + "\n" + tail + "\n"


def _versions(kind: str, stack_version: str | None) -> str:
    """For a stack target: the version exported with, and that the script prints its own."""
    if kind not in STACK_PACKAGES:
        return ""
    package = STACK_PACKAGES[kind]
    where = (
        f"`{package}` {stack_version} was installed where this was exported"
        if stack_version
        else f"`{package}` was not installed where this was exported"
    )
    return (
        f" {where} (the finding does not record the version it was made with; tlsleak "
        "checks a target with the version it imports); the script prints the version it "
        "runs on (`stack:`)."
    )


def _expected_outcome(finding: Finding) -> str:
    if finding.outcome.step is None:
        return "accepted"
    return f"<how the path refused the input: step {finding.outcome.step} failed>"


def _fail_point(stored: StoredFinding, *, driver: bool) -> str:
    point, finding = stored.fail_point, stored.finding
    where = (
        f"allocation number {point.fail_at} of the attempt (a clean run of the same "
        f"input made {point.warmup_allocations})"
        if point is not None
        else f"allocation number {finding.fail_at} of the attempt"
    )
    text = f"## Allocation failure needed\n\nThis finding appears only when {where} fails. "
    if driver and point is not None:
        return text + (
            "The driver does that itself: its `malloc` wrappers count allocations as tlsleak "
            f"does and fail, in every attempt, the one {point.from_end} before the last of a "
            "clean attempt (counted from the end: what tlsleak's worker allocates before "
            "calling the library is not the driver's). It prints which one it fails; when the "
            "library changed, that may be another allocation.\n"
        )
    how = (
        "The standalone script can't make an allocation fail"
        if not driver
        else "This folder was stored without the warm-up count the driver anchors on"
    )
    return text + (
        f"{how}, so it runs the path with every allocation succeeding and will not show "
        "the leak. Reproduce it with an allocation-failure injector (a malloc wrapper that "
        f"returns NULL at that count), or with `tlsleak replay {stored.folder.name}`. "
        "The blobs are the ones that reach that allocation.\n"
    )
