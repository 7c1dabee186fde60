"""A node's TLS identity on disk, and the fingerprints that name it."""

import hashlib
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st
from OpenSSL import crypto

from fileshare.errors import BadRequest
from fileshare.tls import identity as identity_module
from fileshare.tls.fingerprints import BadFingerprint, Fingerprint, fingerprint, parse_fingerprint
from fileshare.tls.identity import IdentityError, generate, load_or_create


def paths(tmp_path):
    state = tmp_path / ".fileshare"
    return state / "peer-cert.pem", state / "peer-key.pem"


def spki_sha256(certificate):
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


# -- creating and loading ------------------------------------------------------


def test_first_start_creates_a_self_signed_certificate_and_a_private_key(tmp_path):
    cert_path, key_path = paths(tmp_path)
    identity = load_or_create(cert_path, key_path, "peer alice")

    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert certificate == identity.certificate
    assert certificate.issuer == certificate.subject
    assert certificate.subject.rfc4514_string() == "CN=peer alice"
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert key.public_key() == certificate.public_key()
    assert str(identity.fingerprint) == "sha256:" + spki_sha256(certificate)


def test_the_key_is_written_with_mode_0600_whatever_the_umask(tmp_path):
    cert_path, key_path = paths(tmp_path)
    previous = os.umask(0)
    try:
        load_or_create(cert_path, key_path, "peer")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert stat.S_IMODE(cert_path.parent.stat().st_mode) == 0o700


def test_a_later_start_loads_the_same_identity(tmp_path):
    cert_path, key_path = paths(tmp_path)
    first = load_or_create(cert_path, key_path, "peer")
    key_bytes = key_path.read_bytes()

    second = load_or_create(cert_path, key_path, "another name is ignored")

    assert second.fingerprint == first.fingerprint
    assert second.certificate == first.certificate
    assert key_path.read_bytes() == key_bytes


def test_a_lost_certificate_is_remade_for_the_same_key_and_fingerprint(tmp_path):
    cert_path, key_path = paths(tmp_path)
    first = load_or_create(cert_path, key_path, "peer")
    cert_path.unlink()

    second = load_or_create(cert_path, key_path, "peer")

    assert second.fingerprint == first.fingerprint
    assert second.certificate != first.certificate
    assert x509.load_pem_x509_certificate(cert_path.read_bytes()) == second.certificate


def test_a_certificate_without_its_key_is_an_error_not_a_new_identity(tmp_path):
    cert_path, key_path = paths(tmp_path)
    load_or_create(cert_path, key_path, "peer")
    key_path.unlink()

    with pytest.raises(IdentityError) as caught:
        load_or_create(cert_path, key_path, "peer")

    assert str(key_path) in str(caught.value)
    assert str(cert_path) in str(caught.value)
    assert not key_path.exists()


def test_generated_identities_differ():
    assert generate("a").fingerprint != generate("a").fingerprint


# -- atomic writes ---------------------------------------------------------------


def test_a_failed_key_write_leaves_no_key_and_no_temporary_file(tmp_path, monkeypatch):
    cert_path, key_path = paths(tmp_path)

    def no_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(identity_module.os, "fsync", no_disk)
    with pytest.raises(IdentityError) as caught:
        load_or_create(cert_path, key_path, "peer")

    assert str(caught.value) == f"cannot write {key_path}: No space left on device"
    assert sorted(p.name for p in key_path.parent.iterdir()) == []


def test_a_start_interrupted_between_key_and_certificate_keeps_the_key(tmp_path, monkeypatch):
    cert_path, key_path = paths(tmp_path)
    real_replace = os.replace

    def crash_on_certificate(src, dst):
        if str(dst) == str(cert_path):
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(identity_module.os, "replace", crash_on_certificate)
    with pytest.raises(IdentityError):
        load_or_create(cert_path, key_path, "peer")
    monkeypatch.undo()
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)

    identity = load_or_create(cert_path, key_path, "peer")

    assert identity.private_key.private_numbers() == key.private_numbers()
    assert sorted(p.name for p in key_path.parent.iterdir()) == ["peer-cert.pem", "peer-key.pem"]


# -- damaged files ---------------------------------------------------------------


@pytest.mark.parametrize("damage", [b"", b"not a key\n", "truncate"])
def test_a_damaged_key_is_refused_naming_its_path(tmp_path, damage):
    cert_path, key_path = paths(tmp_path)
    load_or_create(cert_path, key_path, "peer")
    key_path.write_bytes(key_path.read_bytes()[:60] if damage == "truncate" else damage)

    with pytest.raises(IdentityError) as caught:
        load_or_create(cert_path, key_path, "peer")

    assert str(caught.value).startswith(f"cannot read the private key in {key_path}: ")


def test_a_damaged_certificate_is_refused_naming_its_path(tmp_path):
    cert_path, key_path = paths(tmp_path)
    load_or_create(cert_path, key_path, "peer")
    cert_path.write_bytes(cert_path.read_bytes()[:100])

    with pytest.raises(IdentityError) as caught:
        load_or_create(cert_path, key_path, "peer")

    assert str(caught.value).startswith(f"cannot read the certificate in {cert_path}: ")


def test_a_certificate_for_another_key_is_refused_naming_both_paths(tmp_path):
    cert_path, key_path = paths(tmp_path)
    load_or_create(cert_path, key_path, "peer")
    other = generate("someone else")
    cert_path.write_bytes(other.certificate.public_bytes(serialization.Encoding.PEM))

    with pytest.raises(IdentityError) as caught:
        load_or_create(cert_path, key_path, "peer")

    assert str(caught.value) == (
        f"the certificate {cert_path} does not belong to the private key {key_path}; "
        f"delete {cert_path} to make a new certificate for this key"
    )


def test_an_unreadable_key_file_is_refused_naming_its_path(tmp_path):
    cert_path, key_path = paths(tmp_path)
    key_path.mkdir(parents=True)  # a directory where the key should be

    with pytest.raises(IdentityError) as caught:
        load_or_create(cert_path, key_path, "peer")

    assert str(key_path) in str(caught.value)


# -- fingerprints ----------------------------------------------------------------


def test_the_fingerprint_pins_the_public_key_not_the_certificate():
    identity = generate("peer")
    renewed = identity_module.self_signed(identity.private_key, "renamed")

    assert fingerprint(renewed) == identity.fingerprint
    assert renewed != identity.certificate


def test_the_fingerprint_of_a_pyopenssl_certificate_is_the_same():
    identity = generate("peer")
    assert fingerprint(crypto.X509.from_cryptography(identity.certificate)) == identity.fingerprint


def test_a_fingerprint_prints_as_sha256_and_lower_case_hex():
    assert str(Fingerprint(bytes(range(32)))) == "sha256:" + bytes(range(32)).hex()


@given(st.binary(min_size=32, max_size=32))
def test_a_printed_fingerprint_parses_back_to_itself(digest):
    fp = Fingerprint(digest)
    assert parse_fingerprint(str(fp)) == fp
    assert Fingerprint.from_wire(fp.to_wire()) == fp


@given(st.binary(min_size=32, max_size=32), st.sampled_from(["", " ", "\t", "\n"]))
def test_upper_case_and_surrounding_blanks_are_forgiven(digest, blank):
    text = blank + str(Fingerprint(digest)).upper() + blank
    assert parse_fingerprint(text) == Fingerprint(digest)


@given(st.text(max_size=100))
def test_text_that_is_not_a_fingerprint_is_refused_with_a_clear_message(text):
    cleaned = text.strip().lower()
    hexdigits = cleaned.removeprefix("sha256:")
    is_fingerprint = (
        cleaned.startswith("sha256:") and len(hexdigits) == 64 and all(c in "0123456789abcdef" for c in hexdigits)
    )
    if is_fingerprint:
        return
    with pytest.raises(BadFingerprint) as caught:
        parse_fingerprint(text)
    assert "expected sha256: followed by 64 hex digits" in str(caught.value)


@given(st.binary(min_size=0, max_size=64).filter(lambda b: len(b) != 32))
def test_a_digest_of_the_wrong_length_is_refused(digest):
    with pytest.raises(BadFingerprint):
        parse_fingerprint("sha256:" + digest.hex())
    with pytest.raises(BadFingerprint):
        Fingerprint(digest)


@pytest.mark.parametrize(
    "text",
    [
        "sha1:" + "ab" * 20,
        "sha256:" + "ab" * 31,
        "sha256:" + "AB:" * 15 + "AB",
        "sha256 " + "ab" * 32,
        "sha256:" + "ab" * 32 + "00",
        "sha256:" + "g" * 64,
    ],
)
def test_near_misses_are_refused(text):
    with pytest.raises(BadFingerprint) as caught:
        parse_fingerprint(text)
    assert str(caught.value) == f"not a fingerprint: {text!r}; expected sha256: followed by 64 hex digits"


@pytest.mark.parametrize("value", [None, 42, b"sha256:" + b"ab" * 32])
def test_a_fingerprint_that_is_not_text_is_refused(value):
    with pytest.raises(BadFingerprint) as caught:
        parse_fingerprint(value)
    assert str(caught.value).startswith("a fingerprint is text like sha256:<64 hex digits>, not ")


def test_a_bad_fingerprint_is_a_bad_request_and_a_value_error():
    """The wire turns it into a bad-request reply; ``usage.Options`` into a usage error."""
    error = BadFingerprint("x")
    assert isinstance(error, BadRequest) and isinstance(error, ValueError)
    assert error.code == "bad-request"
