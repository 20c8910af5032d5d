"""Checking one case: the oracle, its worker process, findings and their minimisation.

``oracle`` runs a target on a case between ledger snapshots and replays
growth to tell a leak from a one-time cache; ``worker`` runs the oracle in a
child process so a crash or a hang is a finding; ``findings`` stores what was
found, once per signature; ``minimize`` shrinks a reproducer while its
signature holds.
"""
