"""Hypothesis and the fuzzer share their finds (the public home).

:func:`corpus_examples` turns campaign reproducers and corpus files into
``@example`` s; :func:`keep_failures` saves what a property fails on for
``tlsleak corpus import --from-hypothesis``.  They live in
:mod:`tlsleak.corpus.sharing`; this module is the stable import path.
"""

from __future__ import annotations

from tlsleak.corpus.sharing import FAILURES_ENV, corpus_examples, failures_folder, keep_failures

__all__ = ["FAILURES_ENV", "corpus_examples", "failures_folder", "keep_failures"]
