import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fileshare import pieces
from fileshare.pieces import (
    DIGEST_SIZE,
    MAX_PIECES,
    MIN_PIECE_SIZE,
    Digest,
    hash_file,
    piece_count,
    piece_size_for,
    piece_span,
    root_of,
)

MiB = 1 << 20


def reference_pieces(data: bytes, piece_size: int) -> bytes:
    """SHA-256 of each piece, concatenated; an empty file is one empty piece."""
    if not data:
        return hashlib.sha256(b"").digest()
    return b"".join(hashlib.sha256(data[i : i + piece_size]).digest() for i in range(0, len(data), piece_size))


def write(tmp_path, data: bytes) -> str:
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    return str(path)


def sample(n: int) -> bytes:
    # Not periodic in any piece size used here, so swapped pieces would show.
    return hashlib.shake_256(b"fileshare").digest(n) if n else b""


@pytest.fixture
def small_pieces(monkeypatch):
    """4 KiB pieces, read 1000 bytes at a time (so reads straddle piece boundaries)."""
    monkeypatch.setattr(pieces, "MIN_PIECE_SIZE", 4096)
    monkeypatch.setattr(pieces, "_READ", 1000)
    return 4096


# -- piece_size_for ---------------------------------------------------------


def test_piece_size_is_one_mib_for_an_empty_file():
    assert piece_size_for(0) == MIN_PIECE_SIZE == MiB


def test_piece_size_stays_one_mib_up_to_max_pieces_mib():
    assert piece_size_for(MAX_PIECES * MiB) == MiB


def test_piece_size_doubles_one_byte_past_max_pieces_mib():
    assert piece_size_for(MAX_PIECES * MiB + 1) == 2 * MiB


def test_piece_size_doubles_again_one_byte_past_twice_max_pieces_mib():
    assert piece_size_for(2 * MAX_PIECES * MiB) == 2 * MiB
    assert piece_size_for(2 * MAX_PIECES * MiB + 1) == 4 * MiB


@given(st.integers(min_value=0, max_value=1 << 50))
def test_piece_size_is_the_smallest_power_of_two_mib_that_keeps_max_pieces(size):
    piece = piece_size_for(size)
    assert piece % MiB == 0 and (piece // MiB).bit_count() == 1
    assert piece_count(size, piece) <= MAX_PIECES
    if piece > MiB:
        assert piece_count(size, piece // 2) > MAX_PIECES


def test_piece_size_for_reads_the_module_constants_at_call_time(monkeypatch):
    monkeypatch.setattr(pieces, "MIN_PIECE_SIZE", 4096)
    monkeypatch.setattr(pieces, "MAX_PIECES", 4)
    assert piece_size_for(4 * 4096) == 4096
    assert piece_size_for(4 * 4096 + 1) == 8192


# -- piece_count / piece_span -----------------------------------------------


def test_an_empty_file_has_one_empty_piece():
    assert piece_count(0, 1024) == 1
    assert piece_span(0, 0, 1024) == (0, 0)


def test_a_file_smaller_than_a_piece_has_one_short_piece():
    assert piece_count(1, 1024) == 1
    assert piece_span(0, 1, 1024) == (0, 1)


def test_an_exact_multiple_has_only_full_pieces():
    assert piece_count(2048, 1024) == 2
    assert piece_span(0, 2048, 1024) == (0, 1024)
    assert piece_span(1, 2048, 1024) == (1024, 1024)


def test_one_byte_over_a_multiple_adds_a_one_byte_piece():
    assert piece_count(2049, 1024) == 3
    assert piece_span(2, 2049, 1024) == (2048, 1)


def test_a_span_past_the_end_is_empty():
    assert piece_span(3, 2049, 1024) == (3072, 0)
    assert piece_span(1, 0, 1024) == (1024, 0)


@given(st.integers(min_value=0, max_value=5000), st.integers(min_value=1, max_value=6000))
def test_spans_tile_the_file_without_gaps(size, piece_size):
    n = piece_count(size, piece_size)
    spans = [piece_span(i, size, piece_size) for i in range(n)]
    assert sum(length for _, length in spans) == size
    offset = 0
    for start, length in spans:
        assert start == offset
        offset += length
    assert all(length == piece_size for _, length in spans[:-1])


# -- root_of / hash_file ----------------------------------------------------


def test_root_is_the_sha256_hex_of_the_concatenated_piece_digests():
    digests = hashlib.sha256(b"a").digest() + hashlib.sha256(b"b").digest()
    assert root_of(digests) == hashlib.sha256(digests).hexdigest()
    assert root_of(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_hash_file_of_a_small_file_is_one_piece_of_one_mib(tmp_path):
    data = sample(10_000)
    digest = hash_file(write(tmp_path, data))
    assert digest.size == 10_000
    assert digest.piece_size == MiB
    assert digest.pieces == hashlib.sha256(data).digest()
    assert digest.root == hashlib.sha256(hashlib.sha256(data).digest()).hexdigest()


def test_hash_file_of_an_empty_file_is_one_empty_piece(tmp_path):
    digest = hash_file(write(tmp_path, b""))
    assert digest.size == 0
    assert digest.count == 1
    assert digest.pieces == hashlib.sha256(b"").digest()
    assert digest.root == root_of(hashlib.sha256(b"").digest())
    assert digest.span(0) == (0, 0)


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 4095, 4096, 4097, 3 * 4096, 3 * 4096 + 1, 10 * 4096 - 1])
def test_hash_file_matches_a_hashlib_reference(tmp_path, small_pieces, size):
    data = sample(size)
    digest = hash_file(write(tmp_path, data))
    expected = reference_pieces(data, small_pieces)
    assert digest == Digest(size, small_pieces, expected, hashlib.sha256(expected).hexdigest())
    assert digest.count == piece_count(size, small_pieces)


def test_hash_file_uses_piece_size_for(tmp_path, monkeypatch):
    monkeypatch.setattr(pieces, "MIN_PIECE_SIZE", 4096)
    monkeypatch.setattr(pieces, "MAX_PIECES", 4)
    data = sample(5 * 4096)
    digest = hash_file(write(tmp_path, data))
    assert digest.piece_size == 8192
    assert digest.count == 3
    assert digest.pieces == reference_pieces(data, 8192)


def test_digest_piece_digest_and_span_address_each_piece(tmp_path, small_pieces):
    data = sample(2 * 4096 + 10)
    digest = hash_file(write(tmp_path, data))
    assert digest.count == 3
    for i in range(3):
        offset, length = digest.span(i)
        assert digest.piece_digest(i) == hashlib.sha256(data[offset : offset + length]).digest()
    assert digest.span(2) == (8192, 10)


# -- Digest.from_wire -------------------------------------------------------


def wire_parts(size: int = 2 * MiB + 5, piece_size: int = MiB):
    data = sample(size)
    piece_list = reference_pieces(data, piece_size)
    return size, piece_size, piece_list, root_of(piece_list)


def test_from_wire_accepts_a_piece_list_matching_size_and_root():
    size, piece_size, piece_list, root = wire_parts()
    digest = Digest.from_wire(size, piece_size, piece_list.hex(), root)
    assert digest == Digest(size, piece_size, piece_list, root)
    assert digest.count == 3


def test_from_wire_accepts_uppercase_hex():
    size, piece_size, piece_list, root = wire_parts()
    assert Digest.from_wire(size, piece_size, piece_list.hex().upper(), root).pieces == piece_list


def test_from_wire_accepts_the_single_piece_of_an_empty_file():
    empty = hashlib.sha256(b"").digest()
    assert Digest.from_wire(0, MiB, empty.hex(), root_of(empty)).pieces == empty


@pytest.mark.parametrize("bad_hex", ["zz" * 96, "abc", "0x" + "00" * 95, "é" * 192])
def test_from_wire_rejects_a_piece_list_that_is_not_hex(bad_hex):
    size, piece_size, _, root = wire_parts()
    with pytest.raises(ValueError) as info:
        Digest.from_wire(size, piece_size, bad_hex, root)
    assert str(info.value) == "piece list is not hex"


@pytest.mark.parametrize("digests", [0, 1, 2, 4])
def test_from_wire_rejects_a_piece_list_of_the_wrong_length(digests):
    size, piece_size, piece_list, _ = wire_parts()  # needs 3 digests
    wrong = (piece_list * 2)[: digests * DIGEST_SIZE]
    with pytest.raises(ValueError) as info:
        Digest.from_wire(size, piece_size, wrong.hex(), root_of(wrong))
    assert str(info.value) == "piece list does not fit the file size"


def test_from_wire_rejects_a_piece_list_with_a_partial_digest():
    size, piece_size, piece_list, _ = wire_parts()
    wrong = piece_list[:-1]
    with pytest.raises(ValueError) as info:
        Digest.from_wire(size, piece_size, wrong.hex(), root_of(wrong))
    assert str(info.value) == "piece list does not fit the file size"


def test_from_wire_rejects_no_digest_for_an_empty_file():
    with pytest.raises(ValueError) as info:
        Digest.from_wire(0, MiB, "", root_of(b""))
    assert str(info.value) == "piece list does not fit the file size"


@pytest.mark.parametrize("piece_size", [0, -1, -1024])
def test_from_wire_rejects_a_piece_size_below_one(piece_size):
    size, _, piece_list, root = wire_parts()
    with pytest.raises(ValueError) as info:
        Digest.from_wire(size, piece_size, piece_list.hex(), root)
    assert str(info.value) == "piece list does not fit the file size"


@pytest.mark.parametrize("piece_size", [MiB // 2, 2 * MiB, 4 * MiB])
def test_from_wire_rejects_a_piece_size_other_than_the_rule_gives(piece_size):
    size, _, _, _ = wire_parts()
    pieces = hashlib.sha256(b"x").digest() * -(-size // piece_size)
    with pytest.raises(ValueError) as info:
        Digest.from_wire(size, piece_size, pieces.hex(), root_of(pieces))
    assert str(info.value) == f"piece size {piece_size} is not the {MiB} the file size calls for"


def test_from_wire_rejects_one_piece_as_large_as_a_big_file():
    size = 1 << 30  # the rule gives 1 MiB pieces; one 1 GiB "piece" would be buffered whole
    pieces = hashlib.sha256(b"x").digest()
    with pytest.raises(ValueError) as info:
        Digest.from_wire(size, size, pieces.hex(), root_of(pieces))
    assert str(info.value) == f"piece size {size} is not the {MiB} the file size calls for"


def test_from_wire_rejects_a_piece_list_that_does_not_match_the_root():
    size, piece_size, piece_list, root = wire_parts()
    tampered = bytearray(piece_list)
    tampered[0] ^= 1
    with pytest.raises(ValueError) as info:
        Digest.from_wire(size, piece_size, bytes(tampered).hex(), root)
    assert str(info.value) == "piece list does not match the root"


def test_from_wire_rejects_the_right_piece_list_against_another_root():
    size, piece_size, piece_list, _ = wire_parts()
    with pytest.raises(ValueError) as info:
        Digest.from_wire(size, piece_size, piece_list.hex(), root_of(b"something else"))
    assert str(info.value) == "piece list does not match the root"


@pytest.mark.parametrize(
    "size, piece_size, pieces",
    [(True, 1 << 20, ""), (10, True, ""), (-1, 1 << 20, ""), ("10", 1 << 20, ""), (10, 1 << 20, None)],
)
def test_a_piece_list_with_fields_of_the_wrong_type_is_refused(size, piece_size, pieces):
    with pytest.raises(ValueError, match="piece list fields have the wrong types"):
        Digest.from_wire(size, piece_size, pieces, "0" * 64)
