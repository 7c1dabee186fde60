"""The operator's own CA: a tracker certificate it issued, checked by host name."""

import datetime
import ipaddress

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from service_identity import VerificationError

from fileshare.tls import IdentityError, generate
from fileshare.tls.ca import ca_endpoint, load_certificates, load_identity

from .tls_loopback import Greeter, bounded, close, connect, refusal, start_server, stop_server

NOW = datetime.datetime.now(datetime.UTC)


def name(text):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def make_ca(label):
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name(label))
        .issuer_name(name(label))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def issue(ca, names, key=None):
    ca_certificate, ca_key = ca
    key = key or ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name("tracker"))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return certificate, key


def write(tmp_path, certificate, key, extra=()):
    cert_path, key_path = tmp_path / "tracker.pem", tmp_path / "tracker.key"
    cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (certificate, *extra)))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


LOOPBACK = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


@pytest.fixture(scope="module")
def ca():
    return make_ca("Lab CA")


@pytest.fixture(scope="module")
def client_identity():
    return generate("peer")


@pytest_twisted.ensureDeferred
async def test_a_tracker_certificate_from_the_operators_ca_is_accepted(tmp_path, ca, client_identity):
    from twisted.internet import reactor

    identity = load_identity(*write(tmp_path, *issue(ca, LOOPBACK)))
    server = await start_server(identity)
    try:
        client = await connect(ca_endpoint(reactor, "127.0.0.1", server.number, [ca[0]], client_identity), Greeter)
        assert client.seen == identity.fingerprint
        [accepted] = server.accepted
        assert await bounded(accepted.handshake) == client_identity.fingerprint
        await close(client)
    finally:
        await stop_server(server)


@pytest_twisted.ensureDeferred
async def test_an_intermediate_in_the_certificate_file_is_sent_along(tmp_path, ca, client_identity):
    from twisted.internet import reactor

    intermediate_key = ec.generate_private_key(ec.SECP256R1())
    intermediate = (
        x509.CertificateBuilder()
        .subject_name(name("Lab intermediate"))
        .issuer_name(ca[0].subject)
        .public_key(intermediate_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca[1], hashes.SHA256())
    )
    leaf, key = issue((intermediate, intermediate_key), LOOPBACK)
    identity = load_identity(*write(tmp_path, leaf, key, extra=[intermediate]))
    assert identity.chain == (intermediate,)
    server = await start_server(identity)
    try:
        client = await connect(ca_endpoint(reactor, "127.0.0.1", server.number, [ca[0]], client_identity), Greeter)
        assert client.seen == identity.fingerprint
        await close(client)
    finally:
        await stop_server(server)


@pytest_twisted.ensureDeferred
async def test_a_certificate_from_another_ca_is_refused_before_any_data(tmp_path, ca, client_identity):
    from twisted.internet import reactor

    identity = load_identity(*write(tmp_path, *issue(make_ca("Someone else"), LOOPBACK)))
    server = await start_server(identity)
    try:
        error = await refusal(ca_endpoint(reactor, "127.0.0.1", server.number, [ca[0]], client_identity))
        [accepted] = server.accepted
        await bounded(accepted.lost)
    finally:
        await stop_server(server)

    assert isinstance(error, SSL.Error)
    assert "certificate verify failed" in str(error)
    assert accepted.received == b""


@pytest_twisted.ensureDeferred
async def test_a_certificate_for_another_host_name_is_refused_before_any_data(tmp_path, ca, client_identity):
    from twisted.internet import reactor

    identity = load_identity(*write(tmp_path, *issue(ca, [x509.DNSName("tracker.example")])))
    server = await start_server(identity)
    try:
        error = await refusal(ca_endpoint(reactor, "127.0.0.1", server.number, [ca[0]], client_identity))
        [accepted] = server.accepted
        await bounded(accepted.lost)
    finally:
        await stop_server(server)

    assert isinstance(error, VerificationError)
    assert accepted.received == b""


def test_an_rsa_key_from_the_operator_is_accepted(tmp_path, ca):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certificate, _ = issue(ca, LOOPBACK, key=key)

    identity = load_identity(*write(tmp_path, certificate, key))

    assert identity.certificate == certificate


def test_a_key_that_is_not_the_certificates_is_refused_naming_both_files(tmp_path, ca):
    certificate, _ = issue(ca, LOOPBACK)
    cert_path, key_path = write(tmp_path, certificate, ec.generate_private_key(ec.SECP256R1()))

    with pytest.raises(IdentityError) as caught:
        load_identity(cert_path, key_path)

    assert str(caught.value) == f"the certificate {cert_path} does not belong to the private key {key_path}"


def test_an_encrypted_key_is_refused_with_what_to_do(tmp_path, ca):
    certificate, key = issue(ca, LOOPBACK)
    cert_path, key_path = write(tmp_path, certificate, key)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )

    with pytest.raises(IdentityError) as caught:
        load_identity(cert_path, key_path)

    assert str(caught.value) == f"the private key in {key_path} is encrypted; give an unencrypted key file"


@pytest.mark.parametrize("content", [b"", b"garbage\n", None])
def test_a_missing_or_damaged_ca_file_is_refused_naming_it(tmp_path, content):
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(IdentityError) as caught:
        load_certificates(path)

    assert str(path) in str(caught.value)
