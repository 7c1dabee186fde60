"""Search in pages and the per-host record limit, through the consoles of a real tracker and peers."""

import pytest_twisted

TOO_MANY = (
    "ERR host alice may hold at most 3 files in the index (--max-records); "
    "this request would make it 4, so nothing of it was stored"
)


@pytest_twisted.ensureDeferred
async def test_a_search_longer_than_a_page_goes_on_with_more_and_a_fourth_file_is_refused(net, tmp_path):
    tracker = await net.start_tracker(page_size=2, max_records=3)
    _, alice = await net.user("alice")
    _, bob = await net.user("bob")
    for name in ("c.txt", "a.txt", "b.txt", "d.txt"):
        (tmp_path / name).write_bytes(name.encode())
    for name in ("c.txt", "a.txt", "b.txt"):
        assert (await alice.command(f"publish {tmp_path / name} {name}")).ok

    refused = await alice.command(f"publish {tmp_path / 'd.txt'} d.txt")
    assert refused.status == TOO_MANY
    assert "d.txt" not in " ".join((await alice.command("files")).data)

    first = await bob.command("search *.txt")
    assert [line.split()[0] for line in first.data] == ["a.txt", "b.txt"]
    assert first.status == "OK 2 files match '*.txt'; type 'more' for the next page"
    rest = await bob.command("more")
    assert [line.split()[0] for line in rest.data] == ["c.txt"]
    assert rest.status == "OK 1 more file match '*.txt'; that was the last page"

    admin = await net.console(tracker)
    listed = await admin.command("files")
    assert [line.split()[0] for line in listed.data] == ["a.txt", "b.txt"]
    assert listed.status == "OK 2 files indexed; type 'more' for the next page"
