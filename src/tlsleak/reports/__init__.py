"""Report formats of findings.

Each module turns the result of a run (the cases checked, their outcomes and
the findings) into one format: :mod:`.text` for people at a terminal,
:mod:`.json_report` for programs.  New formats go here, next to them.

Reports only render: they never run a target, and they do not import from
:mod:`tlsleak.cli` (the command line calls them, not the other way round).
"""
