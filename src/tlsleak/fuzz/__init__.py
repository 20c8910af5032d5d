"""Fuzz campaigns: atheris workers under one supervisor, with error-path guidance.

``campaign`` runs a campaign from its ``options``: ``workers`` starts and
restarts the worker processes (``child``; what runs inside is ``worker``),
``shared_corpus`` hands new inputs between them, ``desk`` checks, minimises
and stores what they report, ``stats`` and ``progress`` show it.
``guidance`` turns a verdict into libFuzzer features and ``instrumentation``
says which modules atheris traces.
"""
