"""Fuzz campaigns: atheris workers under one supervisor, with error-path guidance.

``campaign`` runs a campaign from its ``options``: ``workers`` starts and
restarts the worker processes (``child``; what runs inside is ``worker``),
``shared_corpus`` hands new inputs between them, ``desk`` checks, minimises
and stores what they report, ``stats`` and ``progress`` show it.
``guidance`` turns a verdict into libFuzzer features and ``instrumentation``
says which modules atheris traces.
"""

from typing import Final

__all__ = ["MAX_JOBS"]

#: The most workers a campaign runs (``--jobs``): each is an interpreter of a
#: few hundred MB with the target loaded, and one supervisor thread serves
#: them all.  Here rather than in ``options`` so that the command line can
#: show it without importing a campaign.
MAX_JOBS: Final = 64
