import pytest

from fileshare.errors import BadRequest
from fileshare.names import MAX_FNAME_BYTES, check_account, check_fname, check_password

SLASH_MESSAGE = "file name must not contain '/' or '\\'"
CONTROL_MESSAGE = "file name must not contain control characters"
ACCOUNT_MESSAGE = "account name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def rejection(fname):
    with pytest.raises(BadRequest) as info:
        check_fname(fname)
    assert info.value.code == "bad-request"
    return info.value.message


# -- rejected file names ----------------------------------------------------


def test_check_fname_rejects_an_empty_name():
    assert rejection("") == "file name is empty"


@pytest.mark.parametrize("fname", ["a/b", "/", "/etc/passwd", "../a", "a/", "dir/sub/file.txt"])
def test_check_fname_rejects_a_slash(fname):
    assert rejection(fname) == SLASH_MESSAGE


@pytest.mark.parametrize("fname", ["a\\b", "\\", "..\\a", "C:\\Windows"])
def test_check_fname_rejects_a_backslash(fname):
    assert rejection(fname) == SLASH_MESSAGE


@pytest.mark.parametrize("fname", ["\x00", "a\x00b", "a.txt\x00.jpg"])
def test_check_fname_rejects_nul(fname):
    assert rejection(fname) == "file name must not contain NUL"


@pytest.mark.parametrize(
    "fname",
    [
        "a\x01b",
        "a\x7fb",
        "a\nb",
        "a\rb",
        "a\tb",
        "\x1b[31mred",
        "a\x85b",  # NEL, C1 control
        "a\u2028b",  # line separator
        "a\u2029b",  # paragraph separator
        "a\u200bb",  # zero-width space (format)
        "evil\u202etxt.exe",  # right-to-left override (format)
        "\ufeffa",  # byte-order mark (format)
    ],
)
def test_check_fname_rejects_control_characters(fname):
    assert rejection(fname) == CONTROL_MESSAGE


def test_check_fname_rejects_dot():
    assert rejection(".") == "file name '.' is not allowed"


def test_check_fname_rejects_dot_dot():
    assert rejection("..") == "file name '..' is not allowed"


@pytest.mark.parametrize(
    "fname",
    [
        "a" * (MAX_FNAME_BYTES + 1),
        "é" * 128,  # 256 UTF-8 bytes in 128 characters
        "日" * 86,  # 258 UTF-8 bytes
        "😀" * 64,  # 256 UTF-8 bytes
    ],
)
def test_check_fname_rejects_names_over_255_utf8_bytes(fname):
    assert rejection(fname) == "file name is longer than 255 bytes"


@pytest.mark.parametrize("fname", [".fileshare", ".fileshare-partial", ".fileshare.db", ".filesharex"])
def test_check_fname_rejects_the_reserved_fileshare_prefix(fname):
    assert rejection(fname) == "file names starting with '.fileshare' are reserved"


@pytest.mark.parametrize("fname", ["\ud800", "a\udc80b"])
def test_check_fname_rejects_a_lone_surrogate_with_bad_request(fname):
    with pytest.raises(BadRequest):
        check_fname(fname)


# -- accepted file names ----------------------------------------------------


@pytest.mark.parametrize(
    "fname",
    [
        "a",
        "a.txt",
        "a b.pdf",
        " leading and trailing spaces ",
        "résumé.pdf",
        "日本語のファイル.txt",
        "emoji 🎉.png",
        ".hidden",
        "...",
        "a..b",
        "x.fileshare",
        "fileshare",
        "OK",
        "ERR",
        "it's (1) [final] #2 $HOME & more.txt",
        "a" * MAX_FNAME_BYTES,
        "é" * 127 + "a",  # exactly 255 UTF-8 bytes
    ],
)
def test_check_fname_accepts_and_returns_safe_names(fname):
    assert check_fname(fname) == fname


# -- account names ----------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "a", "0day", "Bob.Smith_2-x", "a" * 64, "A-"])
def test_check_account_accepts_letters_digits_dots_underscores_and_dashes(name):
    assert check_account(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "-alice", ".alice", "_alice", "a" * 65, "al ice", "alice\n", "élise", "a/b", "a@b", "a\x00"],
)
def test_check_account_rejects_other_names(name):
    with pytest.raises(BadRequest) as info:
        check_account(name)
    assert info.value.message == ACCOUNT_MESSAGE


# -- passwords --------------------------------------------------------------


@pytest.mark.parametrize("password", ["x", "correct horse battery staple", "p" * 1024, "pässwörd 🔑"])
def test_check_password_accepts_1_to_1024_characters(password):
    assert check_password(password) == password


@pytest.mark.parametrize("password", ["", "p" * 1025])
def test_check_password_rejects_empty_and_over_long_passwords(password):
    with pytest.raises(BadRequest) as info:
        check_password(password)
    assert info.value.message == "password must be 1-1024 characters"
