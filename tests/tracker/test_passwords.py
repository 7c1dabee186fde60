import base64
import hashlib

import pytest

from fileshare.tracker.passwords import hash_password, verify_password

FAST_N = 2**4


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture(scope="module")
def encoded():
    return hash_password("correct horse", n=FAST_N)


def test_hash_is_not_the_password(encoded):
    assert encoded != "correct horse"
    assert "correct horse" not in encoded


def test_hash_records_scheme_and_parameters(encoded):
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16", "8", "1")
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(digest)) == 32


def test_hash_uses_the_documented_scrypt_parameters_by_default():
    assert hash_password("pw").startswith("scrypt$16384$8$1$")


def test_hashes_of_the_same_password_are_salted_differently():
    first = hash_password("correct horse", n=FAST_N)
    second = hash_password("correct horse", n=FAST_N)
    assert first != second
    assert first.split("$")[4] != second.split("$")[4]
    assert verify_password("correct horse", first)
    assert verify_password("correct horse", second)


def test_verify_accepts_the_right_password(encoded):
    assert verify_password("correct horse", encoded) is True


@pytest.mark.parametrize("password", ["wrong", "", "Correct horse", "correct horse ", "correct hors"])
def test_verify_rejects_a_wrong_password(encoded, password):
    assert verify_password(password, encoded) is False


def test_verify_handles_non_ascii_passwords():
    encoded = hash_password("pässwörd 🔑", n=FAST_N)
    assert verify_password("pässwörd 🔑", encoded) is True
    assert verify_password("passwort 🔑", encoded) is False


def test_verify_rejects_a_tampered_digest(encoded):
    head, digest = encoded.rsplit("$", 1)
    raw = bytearray(base64.b64decode(digest))
    raw[-1] ^= 1
    assert verify_password("correct horse", f"{head}${b64(bytes(raw))}") is False


def test_verify_rejects_a_truncated_digest(encoded):
    head, digest = encoded.rsplit("$", 1)
    assert verify_password("correct horse", f"{head}${b64(base64.b64decode(digest)[:16])}") is False


def test_verify_rejects_another_salt(encoded):
    scheme, n, r, p, _salt, digest = encoded.split("$")
    assert verify_password("correct horse", f"{scheme}${n}${r}${p}${b64(b'0' * 16)}${digest}") is False


def test_verify_rejects_another_scheme_name(encoded):
    assert verify_password("correct horse", "bcrypt" + encoded.removeprefix("scrypt")) is False


# Templates over the parts of a real encoding; "{encoded}" is the whole of it.
MALFORMED = {
    "empty": "",
    "plain text": "correct horse",
    "scheme only": "scrypt",
    "empty fields": "$$$$$",
    "too few fields": "{scheme}${n}${r}${p}${salt}",
    "too many fields": "{encoded}$extra",
    "n not a number": "{scheme}$sixteen${r}${p}${salt}${digest}",
    "n not a power of two": "{scheme}$15${r}${p}${salt}${digest}",
    "n zero": "{scheme}$0${r}${p}${salt}${digest}",
    "n negative": "{scheme}$-16${r}${p}${salt}${digest}",
    "n enormous": "{scheme}$" + str(10**30) + "${r}${p}${salt}${digest}",
    "n over the memory limit": "{scheme}$" + str(2**40) + "${r}${p}${salt}${digest}",
    "r zero": "{scheme}${n}$0${p}${salt}${digest}",
    "p zero": "{scheme}${n}${r}$0${salt}${digest}",
    "r not a number": "{scheme}${n}$eight${p}${salt}${digest}",
    "salt not base64": "{scheme}${n}${r}${p}$%%%${digest}",
    "digest with bad padding": "{scheme}${n}${r}${p}${salt}$abc",
    "digest not ascii": "{scheme}${n}${r}${p}${salt}$é",
    "digest empty": "{scheme}${n}${r}${p}${salt}$",
}


@pytest.mark.parametrize("template", MALFORMED.values(), ids=MALFORMED.keys())
def test_verify_returns_false_for_a_malformed_encoding(encoded, template):
    scheme, n, r, p, salt, digest = encoded.split("$")
    bad = template.format(encoded=encoded, scheme=scheme, n=n, r=r, p=p, salt=salt, digest=digest)
    assert verify_password("correct horse", bad) is False


def test_verify_rejects_a_one_byte_digest_for_every_password():
    salt = b"fixed salt 16 b!"
    stub = hashlib.scrypt(b"correct horse", salt=salt, n=FAST_N, r=8, p=1, dklen=1)
    one_byte = f"scrypt${FAST_N}$8$1${b64(salt)}${b64(stub)}"
    accepted = [str(i) for i in range(1024) if verify_password(str(i), one_byte)]
    assert accepted == []
