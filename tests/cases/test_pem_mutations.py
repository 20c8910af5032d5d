"""The PEM model and its mutations, on real material and against real PEM readers.

Each mutation is checked twice: for the change it makes to the bytes, and,
where a reader's verdict is well known, for that verdict (OpenSSL through
pyOpenSSL, and ``cryptography``), next to the untouched input as a negative
control.
"""

from __future__ import annotations

import base64
import random
import re
from collections.abc import Sequence
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import crypto

from tlsleak.cases.choices import Choices, RandomChoices
from tlsleak.cases.material import Encoding, KeyFormat, KeyType, cert_bytes, identity, key_bytes
from tlsleak.cases.pem import (
    LABELS,
    MAX_BLOCKS,
    MAX_BODY,
    MUTATIONS,
    Block,
    Text,
    join,
    mutate,
    split,
)

T = TypeVar("T")

_IDENT = identity(KeyType.EC_P256)
CERT = cert_bytes(_IDENT.leaf)
CERT_DER = cert_bytes(_IDENT.leaf, Encoding.DER)
CHAIN = CERT + b"".join(cert_bytes(c) for c in _IDENT.chain)
EC_KEY = key_bytes(_IDENT.key, KeyFormat.SEC1)
RSA_KEY = key_bytes(identity(KeyType.RSA2048).key, KeyFormat.PKCS1)
ENCRYPTED_KEY = key_bytes(_IDENT.key, KeyFormat.PKCS8_ENCRYPTED, password=b"pw")
# cryptography writes a traditional key with a password in the legacy format:
# Proc-Type and DEK-Info headers, a blank line, the encrypted body.
LEGACY_KEY = _IDENT.key.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.BestAvailableEncryption(b"pw"),
)
MATERIAL = [CERT, CHAIN, EC_KEY, RSA_KEY, ENCRYPTED_KEY, LEGACY_KEY, CHAIN.replace(b"\n", b"\r\n")]


class Prefer:
    """Scripted decisions: the first option found in ``wanted``, else what Hypothesis
    would shrink to (the first option, ``low``, ``flag``, zero bytes)."""

    def __init__(self, *wanted: Any, flag: bool = False) -> None:
        self.wanted = wanted
        self.flag = flag

    def integer(self, low: int, high: int) -> int:
        return low

    def choice(self, options: Sequence[T]) -> T:
        return next((o for o in options if o in self.wanted), options[0])

    def boolean(self) -> bool:
        return self.flag

    def blob(self, min_size: int, max_size: int) -> bytes:
        return bytes(min_size)


def _one(name: str, data: bytes, choices: Choices | None = None) -> bytes:
    """``data`` with mutation ``name`` applied (it must apply)."""
    out, applied = mutate(data, choices or Prefer(), mutations=[name])
    assert applied == name
    assert out != data
    return out


def _blocks(data: bytes) -> list[Block]:
    return [p for p in split(data) if isinstance(p, Block)]


def _der(block: Block) -> bytes:
    return base64.b64decode(block.body.translate(None, b" \t\r\n"))


def _loads_cert(data: bytes) -> bool:
    try:
        crypto.load_certificate(crypto.FILETYPE_PEM, data)
    except crypto.Error:
        return False
    return True


def _loads_key(data: bytes, password: bytes | None = None) -> bool:
    # A passphrase always, so that OpenSSL never prompts on the terminal.
    try:
        crypto.load_privatekey(crypto.FILETYPE_PEM, data, passphrase=password or b"x")
    except crypto.Error:
        return False
    return True


# --- the model ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"no pem at all\n",
        b"\0\xff-----BEGIN\r\r\n",
        *MATERIAL,
        CHAIN.replace(b"\n", b"\r\n"),
        b"text before\n" + CERT + b"text between\n" + EC_KEY + b"after",
        CERT[:-1],
        CERT[: len(CERT) // 2],
        CERT.replace(b"-----END CERTIFICATE-----\n", b""),
        CERT + CERT.replace(b"CERTIFICATE", b"X509 CRL", 1),
        b"-----BEGIN A-----\n-----BEGIN B-----\nAAAA\n-----END B-----\n-----END A-----\n",
    ],
)
def test_split_join_round_trip(data: bytes) -> None:
    assert join(split(data)) == data


def test_split_reads_labels_and_64_column_body_lines() -> None:
    parts = split(CHAIN + EC_KEY)
    assert [type(p) for p in parts] == [Block, Block, Block]
    assert [(b.label, b.end_label) for b in _blocks(CHAIN + EC_KEY)] == [
        (b"CERTIFICATE", b"CERTIFICATE"),
        (b"CERTIFICATE", b"CERTIFICATE"),
        (b"EC PRIVATE KEY", b"EC PRIVATE KEY"),
    ]
    leaf = _blocks(CERT)[0]
    assert leaf.begin == b"-----BEGIN CERTIFICATE-----\n"
    assert leaf.end == b"-----END CERTIFICATE-----\n"
    assert leaf.headers == leaf.blank == b""
    assert leaf.fields == ()
    assert {len(line) for line in leaf.body_lines[:-1]} == {65}
    assert _der(leaf) == CERT_DER


def test_split_reads_legacy_encryption_headers() -> None:
    (block,) = _blocks(LEGACY_KEY)
    assert block.label == b"EC PRIVATE KEY"
    (proc, dek) = block.fields
    assert proc == (b"Proc-Type", b"4,ENCRYPTED")
    assert dek[0] == b"DEK-Info"
    assert re.fullmatch(rb"AES-256-CBC,[0-9A-F]{32}", dek[1])
    assert block.blank == b"\n"
    assert block.body_lines[0][:1] != b"\n"
    # Negative control: the parts really are the key, and it still decrypts.
    serialization.load_pem_private_key(join(split(LEGACY_KEY)), b"pw")


def test_split_keeps_crlf_line_endings_in_the_fields() -> None:
    (block,) = _blocks(LEGACY_KEY.replace(b"\n", b"\r\n"))
    assert block.begin.endswith(b"-----\r\n")
    assert block.newline == b"\r\n"
    assert block.blank == b"\r\n"
    assert block.fields[0] == (b"Proc-Type", b"4,ENCRYPTED")


def test_split_tolerates_missing_and_mismatched_end_lines() -> None:
    data = (
        b"-----BEGIN A-----\nAAAA\n-----BEGIN B-----\nBBBB\n-----END C-----\n-----BEGIN D-----\nDD"
    )
    first, second, third = split(data)
    assert isinstance(first, Block)
    assert isinstance(second, Block)
    assert isinstance(third, Block)
    assert (first.label, first.end_label, first.body) == (b"A", None, b"AAAA\n")
    assert (second.label, second.end_label) == (b"B", b"C")
    assert (third.label, third.end_label, third.body) == (b"D", None, b"DD")


def test_armor_inside_a_line_and_stray_end_lines_are_text() -> None:
    data = b"x-----BEGIN A-----\n-----END A-----\nmore\n"
    assert split(data) == [Text(data)]


# --- the registry ---------------------------------------------------------------------------------


def test_registry_names_are_hyphenated_with_one_line_descriptions() -> None:
    assert len(MUTATIONS) >= 25
    for name, mutation in MUTATIONS.items():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name)
        assert mutation.name == name
        assert mutation.description
        assert "\n" not in mutation.description


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_every_mutation_changes_some_material(name: str) -> None:
    # armor and armor-raw wrap inputs without blocks: DER is one.
    changed = [
        data
        for data in [*MATERIAL, CERT_DER]
        if mutate(data, Prefer(), mutations=[name])[1] == name
    ]
    assert changed
    for data in changed:
        assert mutate(data, Prefer(), mutations=[name])[0] != data


def test_unknown_names_are_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="no-such-mutation"):
        mutate(CERT, Prefer(), mutations=["relabel", "no-such-mutation"])
    with pytest.raises(ValueError, match="body_mutator"):
        mutate(CERT, Prefer(), mutations=["der"])
    with pytest.raises(ValueError, match="sequence of names"):
        mutate(CERT, Prefer(), mutations="relabel")


def test_nothing_applicable_leaves_the_input_unchanged() -> None:
    assert mutate(CERT, Prefer(), mutations=["ec-parameters"]) == (CERT, "unchanged")
    assert mutate(CERT, Prefer(), mutations=[]) == (CERT, "unchanged")
    assert mutate(b"raw", Prefer(), mutations=["relabel"]) == (b"raw", "unchanged")


# --- armor and labels -----------------------------------------------------------------------------


def test_relabel_to_x509_crl_is_rejected_as_a_certificate() -> None:
    out = _one("relabel", CERT, Prefer(b"X509 CRL"))
    (block,) = _blocks(out)
    assert (block.label, block.end_label) == (b"X509 CRL", b"X509 CRL")
    assert block.body == _blocks(CERT)[0].body
    assert not _loads_cert(out)
    assert _loads_cert(join(split(CERT)))  # negative control


def test_relabel_always_picks_another_label() -> None:
    for seed in range(30):
        out = _one("relabel", CERT, RandomChoices(random.Random(seed)))
        assert _blocks(out)[0].label in set(LABELS) - {b"CERTIFICATE"}


def test_old_x509_certificate_label_is_still_a_certificate() -> None:
    # Documented tolerance: OpenSSL reads the pre-RFC 7468 label as CERTIFICATE.
    assert _loads_cert(_one("relabel", CERT, Prefer(b"X509 CERTIFICATE")))


@pytest.mark.parametrize("begin", [False, True])
def test_mismatched_labels_are_rejected(begin: bool) -> None:
    out = _one("mismatch-labels", CERT, Prefer(flag=begin))
    (block,) = _blocks(out)
    assert block.label != block.end_label
    assert (block.label == b"CERTIFICATE") is not begin
    assert not _loads_cert(out)


def test_missing_end_line_is_gone_and_rejected() -> None:
    out = _one("missing-end", CERT)
    assert b"-----END" not in out
    assert _blocks(out)[0].end_label is None
    assert not _loads_cert(out)


def test_missing_final_newline_is_tolerated() -> None:
    out = _one("missing-final-newline", CERT)
    assert out == CERT[:-1]
    assert _loads_cert(out)


def test_missing_final_newline_of_an_inner_block_runs_into_the_next_line() -> None:
    out = _one("missing-final-newline", CHAIN)
    assert b"-----END CERTIFICATE----------BEGIN CERTIFICATE-----" in out


def test_armor_line_mutations_keep_crlf_whole() -> None:
    crlf = CERT.replace(b"\n", b"\r\n")
    assert _one("missing-final-newline", crlf) == crlf[:-2]
    (block,) = _blocks(_one("relabel", crlf))
    assert block.begin.endswith(b"-----\r\n")
    assert block.end.endswith(b"-----\r\n")
    (block,) = _blocks(_one("trailing-whitespace", crlf, Prefer("end")))
    assert block.end.endswith(b"----- \r\n")


def test_trailing_whitespace_on_armor_lines() -> None:
    out = _one("trailing-whitespace", CERT, Prefer(b"\t", "both"))
    (block,) = _blocks(out)
    assert block.begin.endswith(b"-----\t\n")
    assert block.end.endswith(b"-----\t\n")
    assert block.label == block.end_label == b"CERTIFICATE"


# --- line endings and wrapping --------------------------------------------------------------------


def test_crlf_line_endings_are_tolerated_and_lf_restores_them() -> None:
    out = _one("crlf", CERT)
    assert out.count(b"\n") == out.count(b"\r\n") == CERT.count(b"\n")
    assert _loads_cert(out)
    x509.load_pem_x509_certificate(out)
    assert _one("lf", out) == CERT


def test_rewrap_76_is_tolerated() -> None:
    out = _one("rewrap-76", CERT)
    (block,) = _blocks(out)
    assert {len(line) for line in block.body_lines[:-1]} == {77}
    assert _der(block) == CERT_DER
    assert _loads_cert(out)
    assert crypto.load_certificate(crypto.FILETYPE_PEM, out).to_cryptography() == _IDENT.leaf


def test_rewrap_76_keeps_crlf() -> None:
    (block,) = _blocks(_one("rewrap-76", CERT.replace(b"\n", b"\r\n")))
    assert all(line.endswith(b"\r\n") for line in block.body_lines)
    assert _der(block) == CERT_DER


@pytest.mark.parametrize(
    ("name", "widths"),
    [("rewrap-one-line", {len(base64.b64encode(CERT_DER))}), ("rewrap-1", {1})],
)
def test_rewrap_extremes(name: str, widths: set[int]) -> None:
    (block,) = _blocks(_one(name, CERT))
    assert {len(line.rstrip(b"\n")) for line in block.body_lines} == widths
    assert _der(block) == CERT_DER


def test_rewrap_ragged_varies_the_widths() -> None:
    class Ragged(Prefer):
        def __init__(self) -> None:
            super().__init__()
            # The first block, 2 widths, then 17 and 90 columns.
            self.widths = iter([0, 2, 17, 90])

        def integer(self, low: int, high: int) -> int:
            return next(self.widths)

    (block,) = _blocks(_one("rewrap-ragged", CERT, Ragged()))
    assert [len(line) - 1 for line in block.body_lines[:4]] == [17, 90, 17, 90]
    assert _der(block) == CERT_DER


def test_whitespace_inside_the_body_keeps_the_base64() -> None:
    out = _one("body-whitespace", CERT, Prefer(b"\t"))
    (block,) = _blocks(out)
    assert b"\t" in block.body
    assert _der(block) == CERT_DER


# --- several blocks and text ----------------------------------------------------------------------


def test_duplicate_block() -> None:
    out = _one("duplicate-block", CERT)
    assert out == CERT + CERT


def test_insert_block_of_another_kind() -> None:
    out = _one("insert-block", CERT, Prefer(b"PRIVATE KEY", flag=True))
    first, second = _blocks(out)
    assert bytes(first) == CERT
    assert second.label == second.end_label == b"PRIVATE KEY"
    assert second.body == first.body


@pytest.mark.parametrize(
    "text", [b"Proc-Type: 4,ENCRYPTED\n", b"-----END CERTIFICATE-----\n", b"-----\n"]
)
def test_text_before_a_block_is_skipped_by_openssl(text: bytes) -> None:
    out = _one("text-between", CERT, Prefer(text))
    assert out == text + CERT
    assert split(out)[0] == Text(text)
    assert _loads_cert(out)


def test_text_between_blocks() -> None:
    out = _one("text-between", CHAIN, Prefer(b"subject=CN = localhost\n", flag=True))
    first, text, second = split(out)
    assert text == Text(b"subject=CN = localhost\n")
    assert isinstance(first, Block)
    assert isinstance(second, Block)


def test_ec_parameters_block_before_a_key() -> None:
    out = _one("ec-parameters", EC_KEY)
    params, key = _blocks(out)
    assert params.label == params.end_label == b"EC PARAMETERS"
    assert _der(params) == bytes.fromhex("06082a8648ce3d030107")  # prime256v1
    assert bytes(key) == EC_KEY
    # PEM_read_bio_PrivateKey skips blocks it cannot use, whatever the curve.
    assert _loads_key(out)


def test_ec_parameters_with_an_unknown_curve() -> None:
    unknown = bytes.fromhex("06082a8648ce3d030163")
    params, _ = _blocks(_one("ec-parameters", RSA_KEY, Prefer(unknown)))
    assert _der(params) == unknown


# --- body damage ----------------------------------------------------------------------------------


def test_truncate_body_drops_a_line_and_keeps_end() -> None:
    out = _one("truncate-body", CERT)
    (block,) = _blocks(out)
    original = _blocks(CERT)[0]
    assert block.body_lines == original.body_lines[:-1]
    assert block.end == original.end
    assert not _loads_cert(out)


def test_empty_body() -> None:
    out = _one("empty-body", CERT)
    assert out == b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"
    assert not _loads_cert(out)


def test_missing_padding_is_rejected() -> None:
    assert b"=" in EC_KEY
    out = _one("missing-padding", EC_KEY)
    assert b"=" not in out
    assert not _loads_key(out)
    assert _loads_key(EC_KEY)  # negative control


def test_padding_in_the_middle_is_rejected() -> None:
    out = _one("padding-in-middle", CERT)
    (block,) = _blocks(out)
    assert block.body.startswith(b"=")
    assert not _loads_cert(out)


# --- legacy encryption headers --------------------------------------------------------------------


def test_legacy_unknown_cipher_is_rejected() -> None:
    out = _one("legacy-unknown-cipher", EC_KEY)
    (block,) = _blocks(out)
    assert block.fields == (
        (b"Proc-Type", b"4,ENCRYPTED"),
        (b"DEK-Info", b"AES-128-XYZ," + b"0" * 32),
    )
    assert block.blank == b"\n"
    assert block.body == _blocks(EC_KEY)[0].body
    with pytest.raises(ValueError, match="unknown cipher"):
        serialization.load_pem_private_key(out, b"pw")
    assert not _loads_key(out)
    serialization.load_pem_private_key(EC_KEY, None)  # negative control


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("legacy-no-dek-info", ((b"Proc-Type", b"4,ENCRYPTED"),)),
        (
            "legacy-not-encrypted",
            ((b"Proc-Type", b"4,MIC-CLEAR"), (b"DEK-Info", b"AES-128-CBC," + b"0" * 32)),
        ),
        (
            "legacy-wrong-cipher",
            ((b"Proc-Type", b"4,ENCRYPTED"), (b"DEK-Info", b"AES-128-CBC," + b"0" * 32)),
        ),
        ("legacy-iv-length", ((b"Proc-Type", b"4,ENCRYPTED"), (b"DEK-Info", b"AES-128-CBC,"))),
        (
            "legacy-iv-not-hex",
            ((b"Proc-Type", b"4,ENCRYPTED"), (b"DEK-Info", b"AES-128-CBC,G" + b"0" * 31)),
        ),
    ],
)
def test_legacy_headers_are_written_and_rejected(
    name: str, fields: tuple[tuple[bytes, bytes], ...]
) -> None:
    out = _one(name, EC_KEY)
    assert _blocks(out)[0].fields == fields
    assert not _loads_key(out)


def test_legacy_headers_replace_existing_ones() -> None:
    (block,) = _blocks(_one("legacy-no-dek-info", LEGACY_KEY))
    assert block.fields == ((b"Proc-Type", b"4,ENCRYPTED"),)
    assert block.body == _blocks(LEGACY_KEY)[0].body


def test_legacy_iv_lengths_are_wrong() -> None:
    for size in (0, 8, 15, 17, 32):
        (block,) = _blocks(_one("legacy-iv-length", EC_KEY, Prefer(size)))
        iv = block.fields[1][1].partition(b",")[2]
        assert len(iv) == 2 * size


# --- inputs without blocks ------------------------------------------------------------------------


def test_armor_wraps_der_as_pem() -> None:
    out = _one("armor", CERT_DER)
    assert out == CERT  # CERTIFICATE first; 64 columns, as OpenSSL writes it
    assert _loads_cert(out)


def test_armor_raw_puts_the_bytes_between_armor_lines() -> None:
    out = _one("armor-raw", b"\0junk", Prefer(b"PUBLIC KEY"))
    assert out == b"-----BEGIN PUBLIC KEY-----\n\0junk\n-----END PUBLIC KEY-----\n"


def test_input_without_blocks_only_gets_wrapped() -> None:
    seen = {mutate(CERT_DER, RandomChoices(random.Random(s)))[1] for s in range(40)}
    assert seen == {"armor", "armor-raw"}


# --- the DER hook ---------------------------------------------------------------------------------


def test_body_mutator_gets_the_chosen_block_der_and_its_name_is_prefixed() -> None:
    calls: list[bytes] = []

    def flip_last(der: bytes, choices: Choices) -> tuple[bytes, str]:
        calls.append(der)
        return der[:-1] + bytes([der[-1] ^ 1]), "flip-last"

    out, name = mutate(CERT, Prefer("der"), body_mutator=flip_last)
    assert name == "der:flip-last"
    assert calls == [CERT_DER]
    (block,) = _blocks(out)
    assert _der(block) == CERT_DER[:-1] + bytes([CERT_DER[-1] ^ 1])
    assert block.label == b"CERTIFICATE"
    assert {len(line) for line in block.body_lines[:-1]} == {65}


def test_body_mutator_keeps_legacy_headers() -> None:
    out, name = mutate(
        LEGACY_KEY, Prefer(), mutations=["der"], body_mutator=lambda d, c: (b"", "x")
    )
    (block,) = _blocks(out)
    assert name == "der:x"
    assert block.fields == _blocks(LEGACY_KEY)[0].fields
    assert block.body == b""


def test_der_is_only_offered_with_a_body_mutator() -> None:
    names = {mutate(CERT, RandomChoices(random.Random(s)))[1] for s in range(200)}
    assert not any(n.startswith("der") for n in names)
    hooked = {
        mutate(CERT, RandomChoices(random.Random(s)), body_mutator=lambda d, c: (d, "same"))[1]
        for s in range(200)
    }
    assert "der:same" in hooked


# --- bounds ---------------------------------------------------------------------------------------


def test_blocks_past_max_blocks_are_carried_as_text() -> None:
    blocks = [b"-----BEGIN B%d-----\nAAAA\n-----END B%d-----\n" % (i, i) for i in range(200)]
    data = b"".join(blocks)
    tail = b"".join(blocks[MAX_BLOCKS:])
    for seed in range(50):
        out, _ = mutate(data, RandomChoices(random.Random(seed)))
        assert out.endswith(tail)
    # Negative control: the blocks before the limit do get mutated.
    out, _ = mutate(data, Prefer(), mutations=["relabel"])
    assert out != data


def test_large_bodies_are_not_rewritten() -> None:
    body = b"QUFB\n" * (MAX_BODY // 5 + 1)
    data = b"-----BEGIN X-----\n" + body + b"-----END X-----\n"
    names = ["rewrap-76", "truncate-body", "der"]

    def same(der: bytes, choices: Choices) -> tuple[bytes, str]:
        return der, "same"

    assert mutate(data, Prefer(), mutations=names, body_mutator=same) == (data, "unchanged")
    small = b"-----BEGIN X-----\n" + body[: MAX_BODY // 2] + b"-----END X-----\n"
    assert mutate(small, Prefer(), mutations=names, body_mutator=same)[1] == "rewrap-76"
