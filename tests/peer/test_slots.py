"""UploadSlots through UploadProtocol: who waits, who is refused, who gets the next slot, who gives one back."""

from twisted.logger import LogLevel, capturedLogs, formatEvent

from fileshare.peer.slots import MAX_QUEUED_PER_ADDRESS, QUEUE_KEEPALIVE

from .test_upload import GRANTED, build_service, connect, hello, lose, messages, request

GREEDY, MODEST, THIRD = "192.0.2.1", "192.0.2.2", "192.0.2.3"


def greet(service, host):
    protocol, transport = connect(service, host)
    protocol.dataReceived(hello(service))
    return protocol, transport


def mid_body(service, entry, host):
    """A connection from *host* holding a slot, its one request opened and its read not done yet."""
    service.threads.held = True
    protocol, transport = greet(service, host)
    assert messages(transport) == [GRANTED]
    request(protocol, op="get", root=entry.root, offset=0, length=10)
    service.threads.jobs.rotate(1)  # this request's open_range before the reads other holders wait for
    service.threads.run(1)
    assert service.threads.waiting[-1] == "pread"  # and its read waits
    return protocol, transport


def finish_reads(service):
    """Let every read waiting in the threads run: each holder's current request completes."""
    service.threads.run()


def warnings(events):
    return [e for e in events if e.get("log_level") == LogLevel.warn]


def text(event):
    return formatEvent(event)


# -- the per-address bound


def test_a_connection_that_would_wait_beyond_the_address_limit_is_refused_with_queue_full(tmp_path):
    service, _, _, _ = build_service(tmp_path, max_uploads=1)
    greet(service, GREEDY)
    waiting = [greet(service, GREEDY) for _ in range(MAX_QUEUED_PER_ADDRESS)]
    assert [messages(t) for _, t in waiting] == [[{"queued": n}] for n in range(1, MAX_QUEUED_PER_ADDRESS + 1)]

    with capturedLogs() as events:
        refused = [greet(service, GREEDY) for _ in range(3)]

    for _, transport in refused:
        assert messages(transport) == [
            {
                "ok": False,
                "code": "queue-full",
                "message": "too many connections from 192.0.2.1 wait for an upload slot (limit 8); try later",
            }
        ]
        assert transport.disconnecting
    (line,) = warnings(events)  # one line for the three, rate-limited
    assert text(line) == (
        "refused fetcher 192.0.2.1:50000: 8 of its connections already wait for an upload slot"
        " (--max-queued-per-address 8)"
    )
    assert len(service.slots.waiting) == MAX_QUEUED_PER_ADDRESS
    _, other = greet(service, MODEST)  # another address still queues, ahead of the greedy one
    assert messages(other) == [{"queued": 1}]


def test_the_address_limit_is_an_option(tmp_path):
    service, _, _, _ = build_service(tmp_path, max_uploads=1)
    service.slots.per_address = 1
    greet(service, GREEDY)
    _, first = greet(service, GREEDY)
    _, second = greet(service, GREEDY)
    assert messages(first) == [{"queued": 1}]
    assert messages(second)[0]["code"] == "queue-full"


def test_a_thousand_hello_only_connections_from_one_address_delay_another_by_one_slot_turn(tmp_path):
    service, entry, _, _ = build_service(tmp_path, max_uploads=4)
    holders = [mid_body(service, entry, GREEDY) for _ in range(4)]
    flood = [greet(service, GREEDY) for _ in range(1000)]
    assert sum(t.disconnecting for _, t in flood) == 1000 - MAX_QUEUED_PER_ADDRESS

    honest, honest_transport = greet(service, MODEST)
    assert messages(honest_transport) == [{"queued": 1}]  # ahead of the eight greedy ones still waiting

    # The first slot to free, here the newest greedy holder's once its request completes, is the honest one's.
    _, newest_transport = holders[-1]
    service.threads.jobs.rotate(1)  # the newest holder's read first; the others' wait
    service.threads.run(1)
    assert newest_transport.disconnecting
    assert messages(honest_transport) == [GRANTED]


# -- round-robin by address


def test_waiting_connections_are_served_round_robin_by_address_longest_waiting_address_first(tmp_path):
    service, _, _, clock = build_service(tmp_path, max_uploads=1)
    holder, _ = greet(service, THIRD)
    arrivals = [("A1", GREEDY), ("A2", GREEDY), ("B1", MODEST), ("A3", GREEDY), ("B2", MODEST)]
    conns = {name: greet(service, host) for name, host in arrivals}
    clock.advance(0)  # moves are told at the end of the reactor's turn
    by_protocol = {p: name for name, (p, _) in conns.items()}

    # A2 came before B1, but A's turn is after B's once A1 is served.
    assert [by_protocol[p] for p in service.slots.waiting] == ["A1", "B1", "A2", "B2", "A3"]
    assert messages(conns["B1"][1])[-1] == {"queued": 2}
    assert messages(conns["A2"][1])[-1] == {"queued": 3}

    served = []
    current = holder
    for _ in arrivals:
        lose(current)
        (current,) = [p for p, name in by_protocol.items() if p in service.slots.granted]
        served.append(by_protocol.pop(current))
    assert served == ["A1", "B1", "A2", "B2", "A3"]


def test_a_freed_slot_goes_to_the_address_holding_fewest_even_if_it_came_last(tmp_path):
    service, entry, _, clock = build_service(tmp_path, max_uploads=3)
    first, _ = mid_body(service, entry, GREEDY)
    mid_body(service, entry, GREEDY)
    mid_body(service, entry, MODEST)
    _, greedy_waiter = greet(service, GREEDY)
    _, third_waiter = greet(service, THIRD)
    clock.advance(0)  # moves are told at the end of the reactor's turn
    assert messages(greedy_waiter) == [{"queued": 1}, {"queued": 2}]
    assert messages(third_waiter) == [{"queued": 1}]
    lose(first)  # the greedy address still holds one, the third none
    assert messages(third_waiter) == [GRANTED]
    clock.advance(0)
    assert messages(greedy_waiter) == [{"queued": 1}]


# -- the fair share


def test_an_address_over_its_fair_share_gives_a_slot_back_when_its_current_request_completes(tmp_path):
    service, entry, data, _ = build_service(tmp_path, max_uploads=4)
    holders = [mid_body(service, entry, GREEDY) for _ in range(4)]
    with capturedLogs() as events:
        honest, honest_transport = greet(service, MODEST)
        assert messages(honest_transport) == [{"queued": 1}]
        assert not any(t.disconnecting for _, t in holders)  # nothing is cut mid-body

        finish_reads(service)  # every greedy holder's current request completes

    # Share: ceil(4 slots / 2 addresses) = 2.  The two newest greedy holders
    # are over it; the first of them to finish its reply gives its slot back.
    # Once the honest one is served nobody else waits, so the last keeps its.
    assert [t.disconnecting for _, t in holders] == [False, False, True, False]
    assert holders[2][1].value().endswith(b'{"ok":true,"length":10}\n' + data[:10])  # its reply was sent whole
    assert messages(honest_transport) == [GRANTED]
    (line,) = warnings(events)
    assert text(line) == "took back an upload slot of 192.0.2.1: it held 4 of 4 while 1 wait (fair share 2)"


def test_an_idle_connection_over_the_fair_share_gives_its_slot_back_at_once(tmp_path):
    service, entry, _, _ = build_service(tmp_path, max_uploads=2)
    busy, busy_transport = mid_body(service, entry, GREEDY)
    idle, idle_transport = greet(service, GREEDY)
    assert messages(idle_transport) == [GRANTED]
    _, honest_transport = greet(service, MODEST)
    assert idle_transport.disconnecting and not busy_transport.disconnecting
    assert messages(honest_transport) == [{"queued": 1}, GRANTED]


def test_with_one_slot_per_address_nobody_is_over_the_fair_share(tmp_path):
    service, entry, _, _ = build_service(tmp_path, max_uploads=2)
    holders = [mid_body(service, entry, host) for host in (GREEDY, MODEST)]
    _, waiter = greet(service, THIRD)
    finish_reads(service)
    assert not any(t.disconnecting for _, t in holders)  # share ceil(2/3) -> 1: each holds its one
    assert messages(waiter) == [{"queued": 1}]


def test_an_address_alone_may_hold_every_slot(tmp_path):
    service, entry, _, _ = build_service(tmp_path, max_uploads=2)
    holders = [mid_body(service, entry, GREEDY) for _ in range(2)]
    _, waiter = greet(service, GREEDY)
    finish_reads(service)
    assert not any(t.disconnecting for _, t in holders)
    assert messages(waiter) == [{"queued": 1}]


# -- telling the waiting their place


def test_a_waiting_connection_hears_its_place_at_least_every_keepalive_and_whenever_it_changes(tmp_path):
    service, entry, _, clock = build_service(tmp_path, max_uploads=1)
    mid_body(service, entry, THIRD)  # busy: never idle, never taken back
    first, _ = greet(service, GREEDY)
    _, transport = greet(service, MODEST)
    assert messages(transport) == [{"queued": 2}]
    clock.advance(QUEUE_KEEPALIVE - 0.5)
    assert messages(transport) == []
    clock.advance(0.5)
    assert messages(transport) == [{"queued": 2}]
    lose(first)
    clock.advance(0)  # moves are told at the end of the reactor's turn
    assert messages(transport) == [{"queued": 1}]
    for _ in range(3):
        clock.advance(QUEUE_KEEPALIVE)
        assert messages(transport) == [{"queued": 1}]
    assert not transport.disconnecting  # waiting has no timeout


def test_waiting_connections_that_close_in_one_turn_cost_the_one_behind_them_one_message(tmp_path):
    """Each close moving every connection behind it up, told at once, made a thousand waiting
    connections closing together half a million messages: seconds of a stalled reactor."""
    service, _, _, clock = build_service(tmp_path, max_uploads=1)
    greet(service, THIRD)
    waiting = [greet(service, f"198.51.100.{n}") for n in range(1, 201)]
    clock.advance(0)
    last = waiting[-1][1]
    assert messages(last) == [{"queued": 200}]

    for protocol, _ in waiting[:-1]:  # in queue order, within one turn of the reactor
        lose(protocol)
    clock.advance(0)

    assert messages(last) == [{"queued": 1}]


def test_no_keepalive_is_sent_once_nobody_waits(tmp_path):
    service, _, _, clock = build_service(tmp_path, max_uploads=1)
    holder, _ = greet(service, THIRD)
    waiter, transport = greet(service, GREEDY)
    lose(holder)
    assert messages(transport) == [{"queued": 1}, GRANTED]
    clock.advance(QUEUE_KEEPALIVE * 3)
    assert messages(transport) == []
    assert clock.getDelayedCalls() == [] or all(c.func.__name__ != "_keep_alive" for c in clock.getDelayedCalls())


def test_one_waiting_connection_takes_back_one_slot_not_every_slot_over_the_share(tmp_path):
    service, _, _, _ = build_service(tmp_path, max_uploads=4)
    holders = [greet(service, GREEDY) for _ in range(4)]  # idle: each at a request boundary
    _, honest_transport = greet(service, MODEST)
    assert sum(t.disconnecting for _, t in holders) == 1
    assert messages(honest_transport) == [{"queued": 1}, GRANTED]
    assert len(service.slots.granted) == 4
