"""Cases: what a TLS init attempt is given, and every way to make one.

An :class:`~tlsleak.cases.case.InitCase` holds the blobs (CA, certificate,
chain, key), the password, the mode and the server name, in one byte
encoding shared by the corpus, the fuzzer and Hypothesis.  Valid material
(``material``), named defects (``defects``), Hypothesis strategies
(``strategies``), the structure-aware DER/PEM models and mutators (``der``,
``pem``, ``mutator``, driven through ``choices``) and case files on disk
(``files``) all live here.  Nothing here knows of targets or ledgers.
"""
