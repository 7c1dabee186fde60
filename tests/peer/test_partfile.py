"""The part-file helpers, on real files in tmp_path."""

import errno
import hashlib
import os
import threading

import pytest

from fileshare.errors import Conflict, DiskError, IntegrityError
from fileshare.peer import partfile
from fileshare.pieces import root_of

LOCK = threading.Lock()


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def views(*parts: bytes) -> list[memoryview]:
    return [memoryview(p) for p in parts]


def test_opening_a_part_file_creates_it_empty(tmp_path):
    part = tmp_path / "x.part"

    fd = partfile.open_part(str(part), 100)
    os.close(fd)

    assert part.read_bytes() == b""


def test_opening_a_part_file_longer_than_the_file_cuts_it_to_size(tmp_path):
    part = tmp_path / "x.part"
    part.write_bytes(b"a" * 10)

    os.close(partfile.open_part(str(part), 4))

    assert part.read_bytes() == b"aaaa"


def test_a_good_piece_is_written_at_its_offset_and_its_digest_returned(tmp_path):
    part = tmp_path / "x.part"
    fd = partfile.open_part(str(part), 8)
    try:
        found = partfile.verify_and_write(fd, 4, views(b"ef", b"gh"), sha(b"efgh"), "unused", LOCK)
    finally:
        os.close(fd)

    assert found == sha(b"efgh")
    assert part.read_bytes() == b"\0\0\0\0efgh"


def test_a_corrupt_piece_is_not_written(tmp_path):
    part = tmp_path / "x.part"
    fd = partfile.open_part(str(part), 8)
    try:
        found = partfile.verify_and_write(fd, 0, views(b"efgX"), sha(b"efgh"), "unused", LOCK)
    finally:
        os.close(fd)

    assert found is None and part.read_bytes() == b""


def test_without_a_piece_list_the_only_piece_is_checked_against_the_root():
    root = root_of(sha(b"small"))

    assert partfile.verify(views(b"sma", b"ll"), b"", root) == sha(b"small")
    assert partfile.verify(views(b"smaLL"), b"", root) is None


def test_finishing_makes_the_file_durable_and_gives_it_its_name(tmp_path):
    part, final = tmp_path / "x.part", tmp_path / "x"
    part.write_bytes(b"content")
    fd = os.open(part, os.O_RDWR)
    partfile.sync_data(fd)

    st = partfile.finish(fd, str(part), str(final), 7)

    assert final.read_bytes() == b"content" and not part.exists()
    assert st.st_size == 7 and st.st_ino == os.stat(final).st_ino


def test_finishing_a_part_file_of_the_wrong_size_fails_and_names_nothing(tmp_path):
    part, final = tmp_path / "x.part", tmp_path / "x"
    part.write_bytes(b"short")
    fd = os.open(part, os.O_RDWR)

    with pytest.raises(IntegrityError, match="wrong size"):
        partfile.finish(fd, str(part), str(final), 7)

    assert not final.exists() and part.exists()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed all the same


def test_finishing_never_overwrites_an_existing_file_and_keeps_the_part_file(tmp_path):
    part, final = tmp_path / "x.part", tmp_path / "x"
    part.write_bytes(b"content")
    final.write_bytes(b"theirs")
    fd = os.open(part, os.O_RDWR)

    with pytest.raises(Conflict, match="appeared while fetching; the download is kept for a retry"):
        partfile.finish(fd, str(part), str(final), 7)

    assert final.read_bytes() == b"theirs" and part.read_bytes() == b"content"


def test_a_one_piece_file_is_verified_written_and_named_at_once(tmp_path):
    part, final = tmp_path / "x.part", tmp_path / "x"

    found, st = partfile.write_whole(str(part), str(final), views(b"sma", b"ll"), root_of(sha(b"small")), 5, LOCK)

    assert found == sha(b"small") and st.st_size == 5
    assert final.read_bytes() == b"small" and not part.exists()


def test_a_corrupt_one_piece_file_writes_nothing(tmp_path):
    part, final = tmp_path / "x.part", tmp_path / "x"

    assert partfile.write_whole(str(part), str(final), views(b"smaLL"), root_of(sha(b"small")), 5, LOCK) is None
    assert not part.exists() and not final.exists()


def test_a_one_piece_file_whose_name_is_taken_leaves_no_part_file(tmp_path):
    part, final = tmp_path / "x.part", tmp_path / "x"
    final.write_bytes(b"theirs")

    with pytest.raises(Conflict):
        partfile.write_whole(str(part), str(final), views(b"small"), root_of(sha(b"small")), 5, LOCK)

    assert final.read_bytes() == b"theirs" and not part.exists()


def test_a_write_onto_a_full_disk_is_an_error_naming_the_cause_and_the_path(tmp_path, monkeypatch):
    part = tmp_path / "x.part"
    fd = partfile.open_part(str(part), 8)

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(partfile.os, "pwritev", full)
    try:
        with pytest.raises(DiskError) as e:
            partfile.verify_and_write(fd, 0, views(b"efgh"), sha(b"efgh"), "unused", LOCK)
    finally:
        os.close(fd)

    assert e.value.message == f"no space left on device writing {part}"
    assert e.value.code == "disk"


def test_a_short_write_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    part = tmp_path / "x.part"
    fd = partfile.open_part(str(part), 8)
    monkeypatch.setattr(partfile.os, "pwritev", lambda fd, chunks, offset: 1)
    try:
        with pytest.raises(DiskError) as e:
            partfile.write(fd, 0, views(b"efgh"), LOCK)
    finally:
        os.close(fd)

    assert e.value.message == f"no space left on device writing {part}"


def test_a_one_piece_file_that_cannot_be_written_leaves_no_part_file(tmp_path, monkeypatch):
    part, final = tmp_path / "x.part", tmp_path / "x"

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(partfile.os, "pwritev", full)
    with pytest.raises(DiskError) as e:
        partfile.write_whole(str(part), str(final), views(b"small"), root_of(sha(b"small")), 5, LOCK)

    assert e.value.message == f"no space left on device writing {part}"
    assert not part.exists() and not final.exists()


def test_an_unwritable_directory_is_an_error_naming_the_cause_and_the_path(tmp_path, monkeypatch):
    part = tmp_path / "x.part"

    real_open = os.open

    def denied(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:  # the directories open; creating the file in them is refused
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(partfile.os, "open", denied)
    with pytest.raises(DiskError) as e:
        partfile.open_part(str(part), 8)

    assert e.value.message == f"permission denied opening {part}"


def test_a_symlink_planted_as_the_part_file_is_refused_and_nothing_is_written_through_it(tmp_path):
    target = tmp_path / "outside"
    target.write_bytes(b"precious")
    part = tmp_path / "x.part"
    part.symlink_to(target)

    with pytest.raises(DiskError) as e:
        partfile.open_part(str(part), 4)

    assert e.value.message == f"{part} is a symbolic link; refusing to write through it"
    assert target.read_bytes() == b"precious" and part.is_symlink()


def test_naming_a_file_in_an_unwritable_directory_is_an_error_naming_the_file(tmp_path, monkeypatch):
    part, final = tmp_path / "x.part", tmp_path / "x"
    fd = partfile.open_part(str(part), 4)
    os.write(fd, b"abcd")

    def denied(*args):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(partfile.os, "link", denied)
    with pytest.raises(DiskError) as e:
        partfile.finish(fd, str(part), str(final), 4)

    assert e.value.message == f"permission denied completing {final}"
    assert part.read_bytes() == b"abcd"  # kept, with its record, for a retry


def test_a_read_only_file_system_is_named_as_such(tmp_path, monkeypatch):
    part = tmp_path / "x.part"

    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(partfile.os, "open", read_only)
    with pytest.raises(DiskError) as e:
        partfile.open_part(str(part), 8)

    assert e.value.message == f"read-only file system opening {part}"


# -- the directories of the part files: .fileshare and .fileshare/partial


def state_dirs(tmp_path):
    """A repository's DIR/.fileshare/partial, and a directory outside it."""
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    (repo / ".fileshare" / "partial").mkdir(parents=True)
    outside.mkdir()
    return repo, outside


def test_a_symlinked_partial_directory_is_refused_and_nothing_is_written_outside(tmp_path):
    repo, outside = state_dirs(tmp_path)
    partial = repo / ".fileshare" / "partial"
    partial.rmdir()
    partial.symlink_to(outside)

    with pytest.raises(DiskError) as e:
        partfile.open_part(str(partial / "x.part"), 4)

    assert e.value.message == f"{partial} is a symbolic link; refusing to write through it"
    assert os.listdir(outside) == []


def test_a_symlinked_state_directory_is_refused_and_nothing_is_written_outside(tmp_path):
    repo, outside = state_dirs(tmp_path)
    (outside / "partial").mkdir()
    state = repo / ".fileshare"
    (state / "partial").rmdir()
    state.rmdir()
    state.symlink_to(outside)

    with pytest.raises(DiskError) as e:
        partfile.open_part(str(state / "partial" / "x.part"), 4)

    assert e.value.message == f"{state} is a symbolic link; refusing to write through it"
    assert os.listdir(outside / "partial") == []


def test_removing_a_part_file_never_goes_through_a_symlinked_partial_directory(tmp_path):
    repo, outside = state_dirs(tmp_path)
    (outside / "x.part").write_bytes(b"precious")
    partial = repo / ".fileshare" / "partial"
    partial.rmdir()
    partial.symlink_to(outside)

    with pytest.raises(DiskError) as e:
        partfile.remove_part(str(partial / "x.part"))

    assert e.value.message == f"{partial} is a symbolic link; refusing to write through it"
    assert (outside / "x.part").read_bytes() == b"precious"


def test_a_part_file_in_real_directories_is_created_and_removed(tmp_path):
    repo, _ = state_dirs(tmp_path)
    part = repo / ".fileshare" / "partial" / "x.part"

    os.close(partfile.open_part(str(part), 4))
    assert part.exists()

    assert partfile.remove_part(str(part)) is True
    assert partfile.remove_part(str(part)) is False
    assert not part.exists()
