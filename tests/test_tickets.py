"""Download tickets: issue, parse and verify, with properties checked by hypothesis."""

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from fileshare.errors import (
    TicketError,
    TicketExpired,
    TicketInvalid,
    TicketMisbound,
    TicketMissing,
    TicketUnverifiable,
    error_from_reply,
)
from fileshare.tickets import LIFETIME, NO_BINDING, Ticket, TicketKey, client_binding, issue, issue_many, parse, verify

KEY = TicketKey("bob", b"k" * 32)
ROOT = "ab" * 32
BOUND = "sha256:" + "cd" * 32
NOW = 1_764_233_040.5

accounts = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
bindings = st.one_of(st.just(NO_BINDING), st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True))
roots = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
keys = st.binary(min_size=16, max_size=32)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)


def ticket(**fields):
    base = dict(key=KEY.key, fetcher="alice", binding=BOUND, root=ROOT, source="bob", now=NOW)
    base.update(fields)
    return issue(**base)


# -- examples


def test_tickets_issued_together_are_each_what_issue_makes_with_its_own_nonce():
    carol = TicketKey("carol", b"c" * 32)
    texts = issue_many("alice", BOUND, [(KEY.key, ROOT, "bob"), (carol.key, "ef" * 32, "carol")], NOW)
    first, second = parse(texts[0]), parse(texts[1])
    assert first.nonce != second.nonce
    assert texts == [
        ticket(nonce=first.nonce),
        ticket(key=carol.key, root="ef" * 32, source="carol", nonce=second.nonce),
    ]
    assert verify(texts[0], KEY, BOUND, NOW).source == "bob"
    assert verify(texts[1], carol, BOUND, NOW).root == "ef" * 32
    assert issue_many("alice", BOUND, [], NOW) == []


@pytest.mark.parametrize(
    ("fetcher", "binding", "root", "source", "now"),
    [
        ("alice/x", BOUND, ROOT, "bob", NOW),
        ("alice", "sha256:" + "CD" * 32, ROOT, "bob", NOW),
        ("alice", BOUND, ROOT.upper(), "bob", NOW),
        ("alice", BOUND, ROOT + "/x", "bob", NOW),
        ("alice", BOUND, ROOT, "bob/evil", NOW),
        ("alice", BOUND, ROOT, "", NOW),
        ("alice", BOUND, ROOT, "bob", 1e17),
    ],
)
def test_issue_many_refuses_any_field_a_ticket_may_not_hold(fetcher, binding, root, source, now):
    with pytest.raises(ValueError):
        issue_many(fetcher, binding, [(KEY.key, ROOT, "carol"), (KEY.key, root, source)], now)


@settings(max_examples=200, deadline=None)
@given(accounts, bindings, roots, accounts, keys, times)
def test_issue_many_makes_what_issue_makes(fetcher, binding, root, source, key, now):
    (text,) = issue_many(fetcher, binding, [(key, root, source)], now)
    assert text == issue(key, fetcher, binding, root, source, now, nonce=parse(text).nonce)


def test_a_fresh_ticket_verifies_and_names_its_fields():
    found = verify(ticket(nonce="0" * 32), KEY, BOUND, NOW)
    assert found == Ticket(1, "alice", BOUND, ROOT, "bob", int(NOW) + LIFETIME, "0" * 32, found.mac)


def test_the_wire_form_is_slash_separated_text_with_the_version_first():
    text = ticket(nonce="0" * 32)
    assert text.split("/")[:7] == ["1", "alice", BOUND, ROOT, "bob", str(int(NOW) + 60), "0" * 32]


def test_no_ticket_is_missing():
    for text in (None, ""):
        with pytest.raises(TicketMissing):
            verify(text, KEY, BOUND, NOW)


def test_a_source_without_a_key_cannot_check_any_ticket():
    with pytest.raises(TicketUnverifiable):
        verify(ticket(), None, BOUND, NOW)


def test_a_ticket_is_good_until_its_lifetime_is_over():
    text = ticket()
    verify(text, KEY, BOUND, int(NOW) + LIFETIME - 0.001)
    with pytest.raises(TicketExpired):
        verify(text, KEY, BOUND, int(NOW) + LIFETIME)


def test_expiry_is_judged_on_the_trackers_clock_through_the_keys_offset():
    text = ticket()
    slow = TicketKey(KEY.host, KEY.key, offset=3600.0)  # this source's clock is an hour behind the tracker's
    verify(text, slow, BOUND, NOW - 3600 + LIFETIME - 1)
    with pytest.raises(TicketExpired):
        verify(text, slow, BOUND, NOW + 1)


def test_a_ticket_made_with_another_key_is_invalid():
    with pytest.raises(TicketInvalid):
        verify(ticket(key=b"x" * 32), KEY, BOUND, NOW)


def test_a_ticket_for_another_source_is_misbound():
    with pytest.raises(TicketMisbound):
        verify(ticket(source="carol"), KEY, BOUND, NOW)


def test_a_ticket_presented_by_another_identity_is_misbound():
    with pytest.raises(TicketMisbound):
        verify(ticket(), KEY, "sha256:" + "ee" * 32, NOW)
    with pytest.raises(TicketMisbound):
        verify(ticket(), KEY, NO_BINDING, NOW)


def test_ticket_errors_travel_as_their_own_codes():
    for cls in (TicketMissing, TicketExpired, TicketInvalid, TicketMisbound, TicketUnverifiable):
        rebuilt = error_from_reply(cls.code, "m")
        assert type(rebuilt) is cls
    assert {c.code for c in (TicketMissing, TicketExpired, TicketInvalid, TicketMisbound)} == {
        "ticket-missing",
        "ticket-expired",
        "ticket-invalid",
        "ticket-misbound",
    }


def test_the_binding_of_a_plain_connection_is_none():
    assert client_binding(StringTransport()) == NO_BINDING


def test_the_binding_of_a_tls_connection_is_the_fingerprint_of_its_certificate():
    from fileshare.tls import fingerprint, generate

    identity = generate("alice")

    class TLSLike(StringTransport):
        def getPeerCertificate(self):
            return identity.certificate

    assert client_binding(TLSLike()) == str(fingerprint(identity.certificate))


# -- properties


@given(keys, accounts, bindings, roots, accounts, times)
def test_round_trip(key, fetcher, binding, root, source, now):
    text = issue(key, fetcher, binding, root, source, now)
    found = verify(text, TicketKey(source, key), binding, now)
    assert (found.fetcher, found.binding, found.root, found.source) == (fetcher, binding, root, source)
    assert found.expires == int(now) + LIFETIME
    assert parse(text) == found


@given(st.data())
def test_any_bit_flip_is_rejected(data):
    text = ticket()
    raw = bytearray(text.encode())
    i = data.draw(st.integers(0, len(raw) - 1))
    bit = data.draw(st.integers(0, 7))
    raw[i] ^= 1 << bit
    flipped = raw.decode("latin-1")
    with pytest.raises(TicketError):
        verify(flipped, KEY, BOUND, NOW)


@given(
    st.sampled_from(["fetcher", "binding", "root", "source", "expires", "nonce"]),
    st.one_of(
        accounts, bindings, roots, st.integers(0, 10**12).map(str), st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
    ),
)
def test_changing_any_field_without_the_key_is_rejected(name, value):
    original = parse(ticket())
    changed = attrs.evolve(original, **{name: int(value) if name == "expires" and value.isdigit() else value})
    if changed == original:
        return
    fields = attrs.astuple(changed)
    text = "/".join(str(f) for f in fields)
    with pytest.raises(TicketError):
        verify(text, KEY, BOUND, NOW)


@given(st.one_of(st.text(max_size=600), st.binary(max_size=300), st.integers(), st.none(), st.lists(st.text())))
def test_garbage_raises_only_the_typed_error(garbage):
    with pytest.raises(TicketError):
        verify(garbage, KEY, BOUND, NOW)
    if garbage is not None and garbage != "":
        with pytest.raises(TicketInvalid):
            parse(garbage)


@given(st.text(alphabet="0123456789abcdefnosh:/1-._ABZz", max_size=400))
def test_ticket_shaped_garbage_raises_only_the_typed_error(garbage):
    with pytest.raises(TicketError):
        verify(garbage, KEY, BOUND, NOW)
