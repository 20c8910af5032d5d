"""Pass-phrase prompts: OpenSSL asking the terminal for a password, seen in a worker's log.

When the code under test loads an encrypted key and gives OpenSSL neither a
password nor a callback, OpenSSL's default callback prints "Enter PEM pass
phrase:" and waits for someone to type: a service blocks, a CLI tool hangs in
CI.  tlsleak's workers have no terminal (a session of their own, stdin from
``/dev/null``) and write stderr to a log file, so the prompt lands there and
reads nothing.  A worker opens that log for reading too; :class:`StderrLog`
reads back what one case wrote, and :func:`with_prompt` gives the case a
``prompt`` finding when a prompt is in it.  Used by the ``check`` worker
(:mod:`tlsleak.check.worker`) and by the atheris workers of ``fuzz``.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
from dataclasses import replace
from typing import Final

from tlsleak.check.oracle import Finding, FindingKind, Verdict

__all__ = ["StderrLog", "with_prompt"]

#: OpenSSL's pass-phrase prompts ("Enter PEM pass phrase:", "Verifying - Enter
#: PEM pass phrase:", "Enter pass phrase for ...:"), at the start of a line.
_PROMPT: Final = re.compile(rb"(?im)^(?:verifying - )?enter [^\n]*pass ?(?:phrase|word)[^\n]*:")
#: How much of what a case wrote to stderr is searched for a prompt.
_PROMPT_WINDOW: Final = 1 << 20


class StderrLog:
    """This process's stderr, read back when it is a regular file opened for reading too.

    Anything else (a terminal, a pipe, a write-only file) is never read:
    :meth:`prompted_since` is then always False.
    """

    def __init__(self, fd: int = 2) -> None:
        self.fd = fd
        try:
            readable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
            self.on = readable and stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError:
            self.on = False

    def mark(self) -> int:
        """Where the log ends now: pass it to :meth:`prompted_since` after the case."""
        return os.fstat(self.fd).st_size if self.on else 0

    def prompted_since(self, mark: int) -> bool:
        """Whether a pass-phrase prompt was written after ``mark``."""
        if not self.on:
            return False
        size = os.fstat(self.fd).st_size
        if size <= mark:
            return False
        try:
            written = os.pread(self.fd, min(size - mark, _PROMPT_WINDOW), mark)
        except OSError:
            return False
        return _PROMPT.search(written) is not None


def with_prompt(verdict: Verdict, target: str, fail_at: int | None) -> Verdict:
    """``verdict`` with a ``prompt`` finding added: the case made OpenSSL ask for a pass phrase."""
    prompt = Finding(FindingKind.PROMPT, target, verdict.case, verdict.outcome, fail_at=fail_at)
    return replace(verdict, findings=(*verdict.findings, prompt))
