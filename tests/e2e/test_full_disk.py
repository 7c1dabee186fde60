"""A fetch onto a full file system, and a part file replaced by a symlink, end to end.

The fetcher's repository is a small tmpfs (we run as root in CI); where
``mount`` is refused the full-disk test is skipped with the reason.
"""

import os
import subprocess

import pytest
import pytest_twisted

from fileshare.pieces import hash_file

MiB = 1 << 20


@pytest.fixture
def small_disk(tmp_path):
    """tmp_path/bob as a 4 MiB tmpfs, unmounted after the test; a function that resizes it."""
    where = tmp_path / "bob"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], capture_output=True, text=True, timeout=10
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {mounted.stderr.strip() or mounted.returncode}")

    def resize(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True, timeout=10)

    try:
        yield resize
    finally:
        subprocess.run(["umount", "-l", str(where)], timeout=10)


@pytest_twisted.ensureDeferred
async def test_a_fetch_onto_a_full_disk_fails_clearly_cancels_and_succeeds_once_space_is_freed(
    net, tmp_path, small_disk
):
    await net.start_tracker()
    _, alice = await net.user("alice")
    _, bob = await net.user("bob")
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(8 * MiB))
    root = hash_file(str(source)).root
    part = tmp_path / "bob" / ".fileshare" / "partial" / f"{root}.part"
    assert (await alice.command(f"publish {source} big.bin")).ok

    failed = await bob.command("fetch big.bin")

    assert failed.status == f"ERR no space left on device writing {part}", failed
    assert (await bob.command("status")).ok  # the peer goes on serving
    # Whether the record of the pieces written fits on the full disk decides
    # which: kept with its record (cancel removes it) or removed at once.
    kept = part.exists()
    cancelled = await bob.command("cancel big.bin")
    if kept:
        assert cancelled.ok, cancelled
    else:
        assert cancelled.status == "ERR no fetch of 'big.bin' in progress or paused", cancelled
    assert not part.exists()

    small_disk("16m")
    fetched = await bob.command("fetch big.bin")

    assert fetched.status.startswith(f"OK fetched big.bin {8 * MiB} bytes in "), fetched
    assert (tmp_path / "bob" / "big.bin").read_bytes() == source.read_bytes()
    assert os.listdir(part.parent) == []


@pytest_twisted.ensureDeferred
async def test_a_symlink_planted_as_the_part_file_is_refused_and_nothing_is_written_through_it(net, tmp_path):
    await net.start_tracker()
    _, alice = await net.user("alice")
    _, bob = await net.user("bob")
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 * MiB))
    root = hash_file(str(source)).root
    assert (await alice.command(f"publish {source} big.bin")).ok
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not yours\n")
    part = tmp_path / "bob" / ".fileshare" / "partial" / f"{root}.part"
    part.symlink_to(outside)

    refused = await bob.command("fetch big.bin")

    assert refused.status == f"ERR {part} is a symbolic link; refusing to write through it", refused
    assert outside.read_bytes() == b"not yours\n" and part.is_symlink()
    assert not (tmp_path / "bob" / "big.bin").exists()
