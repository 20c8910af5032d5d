"""Splitting a blob into PEM blocks the way embedded TLS libraries do."""

from __future__ import annotations

from tlsleak.cases.blobs import c_string, is_pem, pem_blocks

A = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
B = b"-----BEGIN PRIVATE KEY-----\nBBBB\n"  # its END line is missing


def test_blocks_are_cut_before_each_begin_and_leading_text_dropped() -> None:
    assert pem_blocks(b"junk\n" + A + B) == [A, B]


def test_a_blob_without_armor_has_no_blocks() -> None:
    assert not is_pem(b"\x30\x03\x02\x01\x00")
    assert pem_blocks(b"\x30\x03\x02\x01\x00") == []
    assert pem_blocks(b"") == []


def test_c_string_stops_at_the_first_nul() -> None:
    assert c_string(b"example.org\0evil") == b"example.org"
