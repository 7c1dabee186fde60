import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fileshare.errors import BadRequest
from fileshare.wire.framing import (
    ITEMS_PER_FRAME,
    MAX_COUNT,
    MAX_LINE,
    EncodedItems,
    chunks,
    count,
    decode,
    encode,
    encoded_frames,
    field,
    is_integer,
    is_unicode,
    json_text,
)
from fileshare.wire.rpc import _reply_frames

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.text(alphabet='ab\n\r\t\u2028\u2029é\u00a0😀"\\')
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=10,
)
messages = st.dictionaries(st.text(), json_values, max_size=6)

NEWLINE_MESSAGE = {"a\nb": "line1\nline2\r\n", "ü": "\u2028\u2029", "list": ["x\ny", {"k\r": "\n"}]}


# -- encode / decode --------------------------------------------------------


def test_encode_is_compact_json_with_one_trailing_newline():
    assert encode({"op": "hello", "version": 1}) == b'{"op":"hello","version":1}\n'


def test_encode_writes_non_ascii_as_raw_utf8():
    assert encode({"fname": "résumé 日本.pdf"}) == '{"fname":"résumé 日本.pdf"}\n'.encode()


def test_encode_escapes_newlines_inside_strings():
    assert encode({"s": "a\nb\rc"}) == b'{"s":"a\\nb\\rc"}\n'


@settings(max_examples=40)
@given(messages)
@example(NEWLINE_MESSAGE)
def test_any_json_message_round_trips_through_encode_and_decode(message):
    line = encode(message)
    assert decode(line[:-1]) == message


@settings(max_examples=40)
@given(messages)
@example(NEWLINE_MESSAGE)
def test_any_json_message_encodes_to_exactly_one_line(message):
    line = encode(message)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert b"\r" not in line


def test_decode_parses_a_json_object():
    assert decode(b'{"op":"get","n":3,"names":["a","b"]}') == {"op": "get", "n": 3, "names": ["a", "b"]}


def test_decode_accepts_a_trailing_carriage_return():
    assert decode(b'{"op":"get"}\r') == {"op": "get"}


def test_decode_accepts_utf8_text():
    assert decode('{"fname":"日本語.txt"}'.encode()) == {"fname": "日本語.txt"}


@pytest.mark.parametrize("line", [b"\xff\xfe", b'{"a":"\xc3"}', b'{"a":"\xed\xa0\x80"}'])
def test_decode_rejects_bytes_that_are_not_utf8(line):
    with pytest.raises(BadRequest) as info:
        decode(line)
    assert info.value.message == "message is not UTF-8"
    assert info.value.code == "bad-request"


@pytest.mark.parametrize("line", [b"", b"\r", b"{", b"hello", b"{'a': 1}", b'{"a":1}{"b":2}', b'{"a":1,}'])
def test_decode_rejects_text_that_is_not_json(line):
    with pytest.raises(BadRequest) as info:
        decode(line)
    assert info.value.message == "message is not JSON"


@pytest.mark.parametrize("line", [b"[]", b'[{"a":1}]', b"42", b"1.5", b'"text"', b"null", b"true"])
def test_decode_rejects_json_that_is_not_an_object(line):
    with pytest.raises(BadRequest) as info:
        decode(line)
    assert info.value.message == "message is not a JSON object"


def test_decode_rejects_a_json_array():
    with pytest.raises(BadRequest) as info:
        decode(b"[1,2,3]")
    assert info.value.message == "message is not a JSON object"


def test_decode_rejects_a_json_number():
    with pytest.raises(BadRequest) as info:
        decode(b"7")
    assert info.value.message == "message is not a JSON object"


def test_decode_rejects_deeply_nested_brackets_as_not_json():
    # Well under MAX_LINE (256 KiB), so a peer can send it.
    with pytest.raises(BadRequest) as info:
        decode(b"[" * 100_000)
    assert info.value.message == "message is not JSON"


# -- field / count ----------------------------------------------------------


def test_field_returns_a_value_of_the_right_type():
    assert field({"fname": "a.txt"}, "fname", str) == "a.txt"


def test_field_accepts_any_of_a_tuple_of_types():
    assert field({"n": "x"}, "n", (int, str)) == "x"
    assert field({"n": 3}, "n", (int, str)) == 3


def test_field_rejects_a_missing_field_without_default():
    with pytest.raises(BadRequest) as info:
        field({}, "fname", str)
    assert info.value.message == "missing field 'fname'"


def test_field_returns_the_default_for_a_missing_field():
    assert field({}, "limit", int, None) is None
    assert field({}, "limit", int, 10) == 10


def test_field_ignores_the_default_when_the_field_is_present():
    assert field({"limit": 3}, "limit", int, 10) == 3


def test_field_rejects_a_value_of_the_wrong_type():
    with pytest.raises(BadRequest) as info:
        field({"size": "12"}, "size", int)
    assert info.value.message == "field 'size' has the wrong type"


def test_field_rejects_a_present_value_of_the_wrong_type_even_with_a_default():
    with pytest.raises(BadRequest) as info:
        field({"size": "12"}, "size", int, 0)
    assert info.value.message == "field 'size' has the wrong type"


@pytest.mark.parametrize("value", [True, False])
def test_field_does_not_accept_a_bool_as_an_int(value):
    with pytest.raises(BadRequest) as info:
        field({"size": value}, "size", int)
    assert info.value.message == "field 'size' has the wrong type"


def test_field_does_not_accept_a_bool_for_a_tuple_of_number_types():
    with pytest.raises(BadRequest) as info:
        field({"size": True}, "size", (int, float))
    assert info.value.message == "field 'size' has the wrong type"


def test_field_accepts_a_bool_where_a_bool_is_wanted():
    assert field({"flag": False}, "flag", bool) is False
    assert field({"flag": True}, "flag", (bool, int)) is True


def test_field_does_not_accept_a_float_as_an_int():
    with pytest.raises(BadRequest) as info:
        field({"size": 1.0}, "size", int)
    assert info.value.message == "field 'size' has the wrong type"


@pytest.mark.parametrize("value", [0, -1, 2**63])
def test_is_integer_accepts_json_integers(value):
    assert is_integer(value)


@pytest.mark.parametrize("value", [True, False, 1.0, "1", None, [1]])
def test_is_integer_rejects_bools_and_everything_else(value):
    assert not is_integer(value)


@given(json_values)
def test_is_integer_agrees_with_count_on_what_a_number_is(value):
    try:
        count({"n": value}, "n")
    except BadRequest as e:
        # A number out of range is still a number: only its range is refused.
        accepted = e.message in ("field 'n' must not be negative", f"field 'n' must be at most {MAX_COUNT}")
    else:
        accepted = True
    assert accepted == is_integer(value)


@pytest.mark.parametrize("value", [0, 1, 2**63 - 1])
def test_count_accepts_non_negative_integers_up_to_sqlites_largest(value):
    assert count({"n": value}, "n") == value


@pytest.mark.parametrize("value", [2**63, 2**64, 10**400])
def test_count_rejects_integers_beyond_the_maximum(value):
    assert MAX_COUNT == 2**63 - 1
    with pytest.raises(BadRequest) as info:
        count({"n": value}, "n")
    assert info.value.message == "field 'n' must be at most 9223372036854775807"


def test_count_takes_a_smaller_maximum():
    assert count({"n": 10}, "n", maximum=10) == 10
    with pytest.raises(BadRequest) as info:
        count({"n": 11}, "n", maximum=10)
    assert info.value.message == "field 'n' must be at most 10"


@pytest.mark.parametrize("value", ["\ud800", "a\udfff", "\udc00\ud800*", "\ud800" * 3])
def test_field_rejects_a_string_with_a_lone_surrogate(value):
    with pytest.raises(BadRequest) as info:
        field({"pattern": value}, "pattern", str)
    assert info.value.message == "field 'pattern' has a lone surrogate"


def test_a_lone_surrogate_escaped_in_json_is_refused_where_the_field_is_read():
    message = decode(b'{"id":1,"op":"search","pattern":"\\ud800*"}')
    with pytest.raises(BadRequest) as info:
        field(message, "pattern", str)
    assert info.value.message == "field 'pattern' has a lone surrogate"


@pytest.mark.parametrize("value", ["plain", "caf\u00e9", "\U0001f3b5"])
def test_field_accepts_any_string_utf8_can_write(value):
    assert field({"s": value}, "s", str) == value


def test_a_surrogate_pair_escaped_in_json_is_one_character_and_accepted():
    message = decode(b'{"s":"\\ud83c\\udfb5*"}')
    assert field(message, "s", str) == "\U0001f3b5*"


@pytest.mark.parametrize("value", [-1, -(2**63)])
def test_count_rejects_negative_integers(value):
    with pytest.raises(BadRequest) as info:
        count({"n": value}, "n")
    assert info.value.message == "field 'n' must not be negative"


@pytest.mark.parametrize("value", [True, False, 1.0, "1", None, [1]])
def test_count_rejects_values_that_are_not_ints(value):
    with pytest.raises(BadRequest) as info:
        count({"n": value}, "n")
    assert info.value.message == "field 'n' has the wrong type"


def test_count_rejects_a_missing_field_without_default():
    with pytest.raises(BadRequest) as info:
        count({}, "offset")
    assert info.value.message == "missing field 'offset'"


def test_count_returns_the_default_for_a_missing_field():
    assert count({}, "offset", None) is None
    assert count({}, "offset", 0) == 0


# -- chunks -----------------------------------------------------------------


def test_chunks_of_an_empty_list_is_one_empty_frame():
    assert chunks([]) == [[]]
    assert chunks([], 3) == [[]]


def test_chunks_splits_with_a_shorter_last_frame():
    assert chunks([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]


def test_chunks_of_an_exact_multiple_has_no_empty_trailing_frame():
    assert chunks([1, 2, 3, 4], 2) == [[1, 2], [3, 4]]


def test_chunks_uses_items_per_frame_by_default():
    frames = chunks(list(range(2 * ITEMS_PER_FRAME + 1)))
    assert [len(f) for f in frames] == [ITEMS_PER_FRAME, ITEMS_PER_FRAME, 1]


@given(st.lists(st.integers(), max_size=50), st.integers(min_value=1, max_value=10))
def test_chunks_concatenate_back_to_the_list_in_order(items, size):
    frames = chunks(items, size)
    assert [x for frame in frames for x in frame] == items
    assert all(1 <= len(frame) <= size for frame in frames) or frames == [[]]
    assert len(frames) == max(1, -(-len(items) // size))


def test_a_chunked_frame_of_items_per_frame_long_names_fits_max_line():
    names = ["é" * 127 + "a"] * ITEMS_PER_FRAME  # 255-byte names, the longest allowed
    line = encode({"op": "list", "files": chunks(names)[0]})
    assert len(json.loads(line)["files"]) == ITEMS_PER_FRAME
    assert len(line) - 1 <= MAX_LINE


@pytest.mark.parametrize("n", [0, 1, ITEMS_PER_FRAME, ITEMS_PER_FRAME + 1, 2 * ITEMS_PER_FRAME + 50])
@pytest.mark.parametrize("fields", [{}, {"total": 7, "note": "é"}])
def test_an_encoded_items_reply_is_byte_for_byte_the_same_reply_as_a_dict(n, fields):
    items = [{"host": f"h{i}", "size": i, "name": "ü\u2028"} for i in range(n)]
    as_dict = b"".join(encode(frame) for frame in _reply_frames(7, {"items": items, **fields}))
    encoded = EncodedItems([encode(item)[:-1] for item in items], **fields)
    assert b"".join(encoded_frames(7, encoded)) == as_dict


@given(st.text().filter(is_unicode))
def test_json_text_is_the_string_as_encode_writes_it_in_a_message(text):
    assert b'{"k":' + json_text(text) + b"}\n" == encode({"k": text})
