"""
The one definition of the glob patterns ``search`` takes, for every store.

The rule is the shell's, matched case-sensitively against the whole name:

- ``*`` matches any run of characters, the empty one included;
- ``?`` matches exactly one character;
- ``[...]`` matches one character of the set: single characters and
  inclusive ranges ``a-z`` (by code point; a range whose ends are reversed
  matches nothing); ``!`` or ``^`` first negates the set; a ``]`` first (after
  any ``!``/``^``) is a member, as is a ``-`` first or last;
- a ``[`` with no ``]`` after it is an ordinary character;
- there is no escape character: ``\\`` is ordinary, and ``[*]``, ``[?]`` and
  ``[[]`` stand for those characters.

:func:`compile_glob` parses a pattern once; :meth:`Glob.matches` is the
reference matcher (the memory store's) and :meth:`Glob.sqlite` is the same
pattern in SQLite's ``GLOB`` dialect, so SQL keeps doing the filtering.  The
two dialects differ exactly where users trip: SQLite negates with ``^`` only,
reads ``[!a]`` as "``!`` or ``a``", and never matches an unclosed ``[``.
:meth:`Glob.postgres` is the same pattern as a PostgreSQL regular expression
(for ``~``), anchored at both ends, every bracket member written as a
``\\uXXXX`` escape so no character is special inside it.
"""

from bisect import bisect_right

import attrs

from ..errors import BadRequest

STAR = "*"
ANY = "?"

#: The longest pattern ``search`` takes, in characters: names are at most 255 bytes, so a
#: longer pattern only makes every row's match slower.
MAX_PATTERN = 1024


def check_pattern(pattern: str) -> str:
    """*pattern* if ``search`` takes it, else BadRequest: checked before any store sees it."""
    if len(pattern) > MAX_PATTERN:
        raise BadRequest(f"search pattern longer than {MAX_PATTERN} characters")
    try:
        pattern.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("search pattern has a lone surrogate") from None
    return pattern


@attrs.frozen
class CharSet:
    """One bracket expression: sorted, disjoint, non-adjacent code point ranges."""

    negated: bool
    ranges: tuple[tuple[int, int], ...]

    def __contains__(self, ch: str) -> bool:
        c = ord(ch)
        i = bisect_right(self.ranges, (c, 0x10FFFF + 1)) - 1
        return (i >= 0 and self.ranges[i][0] <= c <= self.ranges[i][1]) != self.negated


#: A parsed pattern item: STAR, ANY, a literal character (any other one-character str), or a CharSet.
Token = str | CharSet


def _merge(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(r for r in ranges if r[0] <= r[1]):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def _bracket(pattern: str, start: int, last_close: int) -> tuple[CharSet, int] | None:
    """The set opened by the ``[`` at *start* and the index after its ``]``; None if it never closes.

    *last_close* is the index of the pattern's last ``]``: knowing it keeps a
    pattern of many unclosed ``[`` linear instead of quadratic.
    """
    i = start + 1
    negated = i < len(pattern) and pattern[i] in "!^"
    if negated:
        i += 1
    first = i
    if last_close <= first:
        return None
    ranges: list[tuple[int, int]] = []
    while i < len(pattern):
        ch = pattern[i]
        if ch == "]" and i > first:
            return CharSet(negated, _merge(ranges)), i + 1
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            ranges.append((ord(ch), ord(pattern[i + 2])))
            i += 3
        else:
            ranges.append((ord(ch), ord(ch)))
            i += 1
    return None


def compile_glob(pattern: str) -> "Glob":
    """Parse *pattern*; every string is a valid pattern."""
    tokens: list[Token] = []
    last_close = pattern.rfind("]")
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "[" and (found := _bracket(pattern, i, last_close)) is not None:
            charset, i = found
            tokens.append(charset)
            continue
        if ch != STAR or not tokens or tokens[-1] != STAR:  # runs of stars mean one star
            tokens.append(ch)
        i += 1
    return Glob(pattern, tuple(tokens))


def _one(token: Token, ch: str) -> bool:
    if token == ANY:
        return True
    if isinstance(token, CharSet):
        return ch in token
    return token == ch


@attrs.frozen
class Glob:
    """A parsed pattern."""

    pattern: str
    tokens: tuple[Token, ...]

    def matches(self, name: str) -> bool:
        """Whether the whole of *name* matches (linear scan with one backtrack point per star)."""
        tokens = self.tokens
        if sum(1 for t in tokens if t != STAR) > len(name):
            return False
        t = n = 0
        star_t = star_n = -1
        while n < len(name):
            if t < len(tokens) and tokens[t] == STAR:
                star_t, star_n = t, n
                t += 1
            elif t < len(tokens) and _one(tokens[t], name[n]):
                t += 1
                n += 1
            elif star_t >= 0:
                star_n += 1
                t, n = star_t + 1, star_n
            else:
                return False
        return all(tok == STAR for tok in tokens[t:])

    def sqlite(self) -> str | None:
        """The same pattern for SQLite's ``GLOB``; None when no name can match it.

        Names never hold NUL (SQLite would end the string there) or lone
        surrogates (not UTF-8), so in a pattern those match nothing here.
        """
        out = []
        for token in self.tokens:
            if isinstance(token, CharSet):
                part = _sqlite_set(token)
                if part is None:
                    return None
                out.append(part)
            elif token in (STAR, ANY):
                out.append(token)
            elif not _storable(token):
                return None
            else:
                out.append(_sqlite_literal(token))
        return "".join(out)

    def postgres(self) -> str | None:
        """The same pattern as a PostgreSQL regular expression (advanced flavour, for ``~``); None if nothing matches.

        PostgreSQL ranges compare code points, ``.`` matches a newline too,
        and ``\\`` before a character that is not a letter or digit stands for it.
        """
        out = ["^"]
        for token in self.tokens:
            if isinstance(token, CharSet):
                ranges = [r for lo, hi in token.ranges for r in _storable_parts(lo, hi)]
                if not ranges:
                    if not token.negated:
                        return None
                    out.append(".")
                    continue
                body = "".join(_pg_char(lo) if lo == hi else f"{_pg_char(lo)}-{_pg_char(hi)}" for lo, hi in ranges)
                out.append("[" + ("^" if token.negated else "") + body + "]")
            elif token == STAR:
                out.append(".*")
            elif token == ANY:
                out.append(".")
            elif not _storable(token):
                return None
            else:
                out.append(token if token.isalnum() or not token.isascii() else "\\" + token)
        return "".join(out) + "$"


def _pg_char(c: int) -> str:
    return f"\\u{c:04x}" if c <= 0xFFFF else f"\\U{c:08x}"


_SURROGATES = (0xD800, 0xDFFF)


def _storable(ch: str) -> bool:
    return ch != "\x00" and not _SURROGATES[0] <= ord(ch) <= _SURROGATES[1]


def _storable_parts(lo: int, hi: int) -> list[tuple[int, int]]:
    """The range without NUL and surrogates, characters no name holds."""
    parts = [(max(lo, 1), min(hi, _SURROGATES[0] - 1)), (max(lo, _SURROGATES[1] + 1), hi)]
    return [(a, b) for a, b in parts if a <= b]


def _sqlite_literal(ch: str) -> str:
    return f"[{ch}]" if ch in "*?[" else ch


# Characters SQLite reads specially inside brackets: "]" closes (except first),
# "^" negates (only first), "-" makes a range (between two members).
_SPECIAL = (ord("-"), ord("]"), ord("^"))


def _sqlite_set(charset: CharSet) -> str | None:
    """A bracket expression SQLite reads as *charset*: specials placed where they are literal."""
    ranges = [r for lo, hi in charset.ranges for r in _storable_parts(lo, hi)]
    specials = []
    for s in _SPECIAL:
        for k, (lo, hi) in enumerate(ranges):
            if lo <= s <= hi:
                specials.append(chr(s))
                ranges[k : k + 1] = [r for r in ((lo, s - 1), (s + 1, hi)) if r[0] <= r[1]]
                break
    body = "".join(chr(lo) if lo == hi else f"{chr(lo)}-{chr(hi)}" for lo, hi in ranges)
    has = set(specials)
    if not charset.negated and not ranges and len(specials) == 1:
        return _sqlite_literal(specials[0])
    if not body and not has:
        return "?" if charset.negated else None
    # "]" first (where SQLite takes it as a member), "^" after something, "-" last.
    text = ("]" if "]" in has else "") + body + ("^" if "^" in has else "") + ("-" if "-" in has else "")
    if not charset.negated and text.startswith("^"):
        text = "-^"  # only "^" and "-" are members: a leading "-" is literal
    return "[" + ("^" if charset.negated else "") + text + "]"
