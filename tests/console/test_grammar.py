import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fileshare.console.grammar import data, err, ok, parse_command, quote
from fileshare.errors import BadRequest

# Any text that can reach parse_command: valid UTF-8 (no surrogates), no NUL.
words = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"))


# -- parse_command ----------------------------------------------------------


def test_parse_command_splits_on_whitespace():
    assert parse_command(b"fetch  a.txt\tb.txt") == ["fetch", "a.txt", "b.txt"]


def test_parse_command_keeps_double_quoted_paths_with_spaces_together():
    line = b'publish "/home/me/My Docs/a b.pdf" "a b.pdf"'
    assert parse_command(line) == ["publish", "/home/me/My Docs/a b.pdf", "a b.pdf"]


def test_parse_command_keeps_single_quoted_words_together():
    assert parse_command(b"fetch 'a \"b\" c.txt'") == ["fetch", 'a "b" c.txt']


def test_parse_command_honours_backslash_escapes():
    assert parse_command(b"fetch a\\ b.txt") == ["fetch", "a b.txt"]


def test_parse_command_decodes_utf8_names():
    line = 'publish "/home/me/Été/résumé 日本.pdf" 🎉.pdf'.encode()
    assert parse_command(line) == ["publish", "/home/me/Été/résumé 日本.pdf", "🎉.pdf"]


def test_parse_command_strips_a_trailing_carriage_return():
    assert parse_command(b"list\r") == ["list"]
    assert parse_command(b'fetch "a b.pdf"\r') == ["fetch", "a b.pdf"]


@pytest.mark.parametrize("line", [b"", b"   ", b"\t", b"\r"])
def test_parse_command_gives_no_words_for_a_blank_line(line):
    assert parse_command(line) == []


def test_parse_command_does_not_treat_hash_as_a_comment():
    assert parse_command(b"fetch #1.txt") == ["fetch", "#1.txt"]


def test_parse_command_keeps_an_empty_quoted_word():
    assert parse_command(b"rename '' b") == ["rename", "", "b"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'publish "a b.pdf', "bad quoting: No closing quotation"),
        (b"publish 'a b.pdf", "bad quoting: No closing quotation"),
        (b"publish a\\", "bad quoting: No escaped character"),
    ],
)
def test_parse_command_rejects_bad_quoting(line, message):
    with pytest.raises(BadRequest) as info:
        parse_command(line)
    assert info.value.message == message
    assert info.value.code == "bad-request"


@pytest.mark.parametrize("line", [b"fetch \xff", b"fetch caf\xc3", b"fetch \xed\xa0\x80", b"\xc0\xaf"])
def test_parse_command_rejects_invalid_utf8(line):
    with pytest.raises(BadRequest) as info:
        parse_command(line)
    assert info.value.message == "command is not valid UTF-8"


@pytest.mark.parametrize("line", [b"fetch a\x00b", b"\x00", b"fetch '\x00'"])
def test_parse_command_rejects_nul(line):
    with pytest.raises(BadRequest) as info:
        parse_command(line)
    assert info.value.message == "command contains NUL"


# -- quote ------------------------------------------------------------------


@pytest.mark.parametrize("word", ["OK", "ERR"])
def test_quote_quotes_status_words(word):
    assert quote(word) == f"'{word}'"
    assert parse_command(quote(word).encode()) == [word]


def test_quote_leaves_plain_names_alone():
    assert quote("a.txt") == "a.txt"


def test_quote_quotes_names_with_spaces():
    assert quote("a b.pdf") == "'a b.pdf'"


@settings(max_examples=60)
@given(words)
@example("")
@example("it's")
@example("a b.pdf")
@example('"\\$`!*?;&|<>(){}#~')
@example("trailing\r")
@example("OK")
@example("ERR")
def test_quote_round_trips_through_parse_command(word):
    assert parse_command(quote(word).encode("utf-8")) == [word]


@settings(max_examples=40)
@given(st.lists(words, max_size=5))
def test_quoted_words_joined_by_spaces_split_back_into_the_same_words(word_list):
    line = " ".join(quote(w) for w in word_list)
    assert parse_command(line.encode("utf-8")) == word_list


# -- status and data lines --------------------------------------------------


def test_ok_prefixes_the_message():
    assert ok("published a.txt") == "OK published a.txt"


def test_err_prefixes_the_message():
    assert err("no such file") == "ERR no such file"


def test_ok_and_err_have_a_default_message():
    assert ok("") == "OK done"
    assert err("") == "ERR failed"


def test_ok_and_err_join_a_multi_line_message_into_one_line():
    assert ok("first\nsecond") == "OK first second"
    assert err("first\r\nsecond\rthird") == "ERR first second third"


@settings(max_examples=60)
@given(st.text())
@example("a\nb")
@example("\r\n")
@example("\n\n")
def test_ok_is_a_single_status_line(message):
    line = ok(message)
    assert line.startswith("OK ")
    assert "\n" not in line and "\r" not in line


@settings(max_examples=60)
@given(st.text())
@example("a\nb")
@example("\r\n")
def test_err_is_a_single_status_line(message):
    line = err(message)
    assert line.startswith("ERR ")
    assert "\n" not in line and "\r" not in line


def test_data_leaves_ordinary_lines_alone():
    assert data("a.txt  12 KiB") == "a.txt  12 KiB"
    assert data("OKAY") == "OKAY"
    assert data("ERRATA") == "ERRATA"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("OK done", " OK done"),
        ("ERR failed", " ERR failed"),
        ("OK", " OK"),
        ("ERR", " ERR"),
        ("OK\n", " OK"),
        ("\nOK x", " OK x"),
    ],
)
def test_data_indents_lines_that_look_like_status_lines(line, expected):
    assert data(line) == expected


def test_data_joins_a_multi_line_text_into_one_line():
    assert data("a\nb\r\nc") == "a b c"


@settings(max_examples=100)
@given(st.text())
@example("OK x")
@example("ERR x")
@example("OK")
@example("ERR")
@example("OK\nERR x")
@example("\r\nOK x")
@example("OK\r")
def test_data_never_looks_like_a_status_line(line):
    out = data(line)
    assert not out.startswith(("OK ", "ERR "))
    assert out not in ("OK", "ERR")
    assert "\n" not in out and "\r" not in out


@settings(max_examples=60)
@given(words)
def test_a_data_line_of_a_quoted_name_never_looks_like_a_status_line(name):
    out = data(quote(name))
    assert not out.startswith(("OK ", "ERR "))
    assert out not in ("OK", "ERR")
