"""``--python PATH`` (or ``TLSLEAK_PYTHON``): run the target under another interpreter.

Shared by ``check`` and ``replay``, whose workers then run under the user's
interpreter or venv with tlsleak shipped to it (docs/python.md): their
pyOpenSSL, cryptography and code are the ones tested, not this environment's.
"""

from __future__ import annotations

import argparse
import os
from typing import Final

from tlsleak.check.worker import IsolatedOracle

__all__ = ["ENV_PYTHON", "add_python", "runtime_line"]

#: The environment variable that gives ``--python`` when the option is not given.
ENV_PYTHON: Final = "TLSLEAK_PYTHON"


def add_python(parser: argparse.ArgumentParser) -> None:
    """Add ``--python PATH``, defaulting to ``$TLSLEAK_PYTHON`` (unset or empty: this Python)."""
    parser.add_argument(
        "--python",
        metavar="PATH",
        default=os.environ.get(ENV_PYTHON) or None,
        help="run the target under this Python (a venv's bin/python) with tlsleak shipped "
        f"to it, so that its own packages are tested (default: ${ENV_PYTHON}, else this one)",
    )


def runtime_line(oracle: IsolatedOracle) -> str | None:
    """``python: ...`` naming the worker's interpreter and stack, when it is not this Python."""
    if oracle.python is None or oracle.runtime is None:
        return None
    return f"python: {oracle.runtime}"
