"""Fuzz campaigns: atheris workers under one supervisor, with error-path guidance.

``campaign`` supervises the workers (``worker``) and shares their corpus,
``desk`` checks, minimises and stores what they report, ``progress`` shows
it, ``guidance`` turns a verdict into libFuzzer features and
``instrumentation`` says which modules atheris traces.
"""
