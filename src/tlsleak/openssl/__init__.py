"""OpenSSL's error queues, read the same way whichever libcrypto a target uses.

Targets report the errors an attempt queued, and the oracle judges what a
target left behind, through :mod:`tlsleak.openssl.errors`.
"""
