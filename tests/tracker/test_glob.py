"""The glob rule of ``search``: the reference matcher, and SQLite's GLOB of its translation agreeing with it."""

import sqlite3

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fileshare.tracker.glob import compile_glob

# (pattern, names it matches, names it does not match)
EXAMPLES = [
    ("*", ["", "a", "*", "any thing"], []),
    ("*.pdf", ["a.pdf", ".pdf", "x.y.pdf"], ["a.PDF", "a.pdf.txt", "pdf"]),
    ("a?c", ["abc", "a?c", "aéc"], ["ac", "abbc", "Abc"]),
    ("[abc]x", ["ax", "cx"], ["dx", "x", "abx"]),
    ("[a-c]", ["a", "b", "c"], ["d", "-", "A"]),
    ("[!a]*", ["b", "!", "ba", "Alpha"], ["a", "abc", ""]),
    ("[^a]*", ["b", "^", "Alpha"], ["a", "abc"]),
    ("[!abc]", ["d", "!"], ["a", "b", "c", "dd"]),
    ("[]a]", ["]", "a"], ["[", "b"]),
    ("[!]a]", ["b", "["], ["]", "a"]),
    ("[]-a]", ["]", "^", "_", "a"], ["b", "-"]),
    ("[a-]", ["a", "-"], ["b"]),
    ("[-a]", ["a", "-"], ["b"]),
    ("[!-]", ["a"], ["-"]),
    ("[a-c-e]", ["a", "b", "c", "-", "e"], ["d"]),
    ("[z-a]", [], ["a", "z", "m", "-"]),
    ("[!z-a]", ["a", "m"], ["", "ab"]),
    ("[", ["["], ["", "a"]),
    ("[abc", ["[abc"], ["a"]),
    ("a[", ["a["], ["a"]),
    ("[[]", ["["], ["[[]"]),
    ("[*]", ["*"], ["a", "**"]),
    ("[?]", ["?"], ["a"]),
    ("[!]", ["[!]"], ["a", "!"]),
    ("[]", ["[]"], ["]", "["]),
    ("[*", ["[*", "[abc"], ["*"]),
    ("\\*", ["\\", "\\abc"], ["*"]),
    ("[[:alpha:]]", ["a]", ":]", "[]"], ["a", "b]"]),
    ("**a**", ["a", "bab"], ["b"]),
    ("ABC", ["ABC"], ["abc"]),
    ("[é-ë]", ["é", "ê", "ë"], ["e", "è"]),
]


def sqlite_glob(pattern: str | None, name: str) -> bool:
    if pattern is None:
        return False
    with sqlite3.connect(":memory:") as db:
        return bool(db.execute("SELECT ? GLOB ?", (name, pattern)).fetchone()[0])


@pytest.mark.parametrize(("pattern", "matching", "other"), EXAMPLES)
def test_the_matcher_follows_the_shell_rule(pattern, matching, other):
    glob = compile_glob(pattern)
    assert [n for n in matching if glob.matches(n)] == matching
    assert [n for n in other if glob.matches(n)] == []


@pytest.mark.parametrize(("pattern", "matching", "other"), EXAMPLES)
def test_sqlite_glob_of_the_translation_follows_the_shell_rule(pattern, matching, other):
    translated = compile_glob(pattern).sqlite()
    assert [n for n in matching if sqlite_glob(translated, n)] == matching
    assert [n for n in other if sqlite_glob(translated, n)] == []


def test_sqlite_reads_the_shell_negation_as_members_which_is_why_patterns_are_translated():
    assert sqlite_glob("[!a]*", "abc") is True
    assert sqlite_glob(compile_glob("[!a]*").sqlite(), "abc") is False


@pytest.mark.parametrize(
    ("pattern", "translated"),
    [
        ("*.pdf", "*.pdf"),
        ("[!a]*", "[^a]*"),
        ("[^a]*", "[^a]*"),
        ("a**b", "a*b"),
        ("[*]?[[]]", "[*]?[[]]"),
        ("[", "[[]"),
        ("[]]", "]"),
        ("[-]", "-"),
        ("[^]", "[[]^]"),
        ("[ba]", "[a-b]"),
        ("[]^-]", "[]^-]"),
        ("[-^]", "[-^]"),
        ("[!^]", "[^^]"),
        ("[!-]", "[^-]"),
        ("[!x-a]", "?"),
        ("[x-a]", None),
        ("a\x00", None),
        ("\ud800*", None),
        ("[\x00-!]", "[\x01-!]"),
        ("[+-~]", "[]+-,.-\\_-~^-]"),
    ],
)
def test_the_sqlite_translation_puts_special_characters_where_sqlite_takes_them_literally(pattern, translated):
    assert compile_glob(pattern).sqlite() == translated


ALPHABET = "ab-]^![*?\\zé"
names = st.text(alphabet=ALPHABET, max_size=8)
patterns = st.text(alphabet=ALPHABET + "\x00", max_size=10)


@given(patterns, names)
@example("[!]a]*", "]")
@example("[]-a]", "^")
@example("[a-]]", "-]")
@example("[!-^]", "]")
def test_the_matcher_and_sqlite_glob_of_the_translation_agree(pattern, name):
    glob = compile_glob(pattern)
    assert glob.matches(name) == sqlite_glob(glob.sqlite(), name)


@given(
    st.text(alphabet=st.characters(), max_size=8),
    st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=8),
)
def test_they_agree_on_any_characters_too(pattern, name):
    glob = compile_glob(pattern)
    assert glob.matches(name) == sqlite_glob(glob.sqlite(), name)


@given(st.text(alphabet="ab*?", max_size=10), st.text(alphabet="ab", max_size=8))
def test_without_brackets_the_matcher_agrees_with_fnmatchcase(pattern, name):
    from fnmatch import fnmatchcase

    assert compile_glob(pattern).matches(name) == fnmatchcase(name, pattern)


def test_a_pattern_that_needs_more_characters_than_the_name_has_fails_fast():
    assert compile_glob("*a" * 100_000).matches("a" * 255) is False


def test_long_patterns_compile_in_linear_time():
    unclosed = compile_glob("[" * 200_000)
    assert (len(unclosed.tokens), unclosed.matches("["), unclosed.sqlite()[:6]) == (200_000, False, "[[][[]")
    closed = compile_glob("[" * 200_000 + "]")
    assert (len(closed.tokens), closed.matches("["), closed.sqlite()) == (1, True, "[[]")
