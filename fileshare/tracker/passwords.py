"""
Password hashing with scrypt, a salted memory-hard function.

Only the encoded hash is stored; hashing takes tens of milliseconds on
purpose, so callers run it in a thread.
"""

import base64
import hashlib
import hmac
import os

# 16 MiB of memory per hash (128 * r * n bytes).
N, R, P = 2**14, 8, 1
_DKLEN = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, n: int = N, r: int = R, p: int = P) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_DKLEN, maxmem=256 * 1024 * 1024)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        if len(expected) != _DKLEN:
            return False
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=_DKLEN,
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


#: A hash in the stored format with today's cost that no password matches.  A
#: login to an unknown account is checked against it, so that it costs the same
#: scrypt work, and takes the same time, as a wrong password for a real one.
DUMMY_HASH = f"scrypt${N}${R}${P}${_b64(bytes(16))}${_b64(bytes(_DKLEN))}"
