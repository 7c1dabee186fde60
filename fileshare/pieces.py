"""
Pieces and content roots: how a file's content is named and verified.

A file is cut into pieces of :func:`piece_size_for` bytes (the last one may be
shorter), each hashed with SHA-256.  The file's *root* is the SHA-256 of the
concatenated piece digests.  The tracker indexes roots; a fetcher checks the
piece list against the root before trusting it, then every piece against its
digest as it arrives.  These functions block: call them in a thread.
"""

import hashlib
import os

import attrs

from .wire.framing import is_integer

MIN_PIECE_SIZE = 1 << 20
#: Piece lists stay at most this long, so they fit one wire line.
MAX_PIECES = 2048
DIGEST_SIZE = 32
_READ = 4 << 20


def piece_size_for(size: int) -> int:
    """1 MiB, doubled until the file has at most MAX_PIECES pieces."""
    piece = MIN_PIECE_SIZE
    while size > piece * MAX_PIECES:
        piece *= 2
    return piece


def piece_count(size: int, piece_size: int) -> int:
    return max(1, -(-size // piece_size))


def piece_span(index: int, size: int, piece_size: int) -> tuple[int, int]:
    """(offset, length) of piece *index*."""
    offset = index * piece_size
    return offset, max(0, min(piece_size, size - offset))


def root_of(pieces: bytes) -> str:
    return hashlib.sha256(pieces).hexdigest()


@attrs.frozen
class Digest:
    """What identifies and verifies one file's content."""

    size: int
    piece_size: int
    pieces: bytes = attrs.field(repr=False)
    root: str

    @property
    def count(self) -> int:
        return len(self.pieces) // DIGEST_SIZE

    def piece_digest(self, index: int) -> bytes:
        return self.pieces[index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE]

    def span(self, index: int) -> tuple[int, int]:
        return piece_span(index, self.size, self.piece_size)

    @classmethod
    def from_wire(cls, size: int, piece_size: int, pieces_hex: str, root: str) -> "Digest":
        """Check a piece list received from another peer against the *root* we trust.

        Its piece size must be :func:`piece_size_for` its size, so a source
        cannot make a fetcher hold more than that rule's piece in memory.
        """
        if not (is_integer(size) and is_integer(piece_size) and isinstance(pieces_hex, str)) or size < 0:
            raise ValueError("piece list fields have the wrong types")
        try:
            pieces = bytes.fromhex(pieces_hex)
        except ValueError:
            raise ValueError("piece list is not hex") from None
        if piece_size < 1 or len(pieces) != piece_count(size, piece_size) * DIGEST_SIZE:
            raise ValueError("piece list does not fit the file size")
        if piece_size != piece_size_for(size):
            # The rule fixes the piece size; a larger one would make the
            # fetcher buffer that much before it can check a single digest.
            raise ValueError(f"piece size {piece_size} is not the {piece_size_for(size)} the file size calls for")
        if root_of(pieces) != root:
            raise ValueError("piece list does not match the root")
        return cls(size, piece_size, pieces, root)


def hash_file(path: str) -> Digest:
    """Hash a file into pieces.  Blocking; memory stays at one read buffer."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        piece_size = piece_size_for(size)
        digests = []
        buf = bytearray(min(_READ, piece_size))
        view = memoryview(buf)
        h = hashlib.sha256()
        in_piece = 0
        while True:
            n = f.readinto(buf)
            if not n:
                break
            pos = 0
            while pos < n:
                take = min(n - pos, piece_size - in_piece)
                h.update(view[pos : pos + take])
                pos += take
                in_piece += take
                if in_piece == piece_size:
                    digests.append(h.digest())
                    h = hashlib.sha256()
                    in_piece = 0
        if in_piece or not digests:
            digests.append(h.digest())
    pieces = b"".join(digests)
    return Digest(size, piece_size, pieces, root_of(pieces))
