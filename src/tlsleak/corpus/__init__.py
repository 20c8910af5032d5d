"""Corpora: growing, importing, merging and describing folders of case files.

``tools`` holds what ``tlsleak corpus`` does; ``sharing`` moves cases between
corpora and Hypothesis.  A single case file's format is :mod:`tlsleak.cases.files`.
"""
