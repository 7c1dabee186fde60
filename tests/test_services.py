"""Program: how a node that cannot start ends its process."""

import os

import pytest
from twisted.application import service
from twisted.internet.defer import Deferred, fail, succeed

from fileshare.services import Program, StartupError, first_failure


class Main(service.Service):
    def __init__(self, started: Deferred) -> None:
        self._started = started

    def startService(self) -> None:
        super().startService()
        self.started = self._started


class FakeReactor:
    def __init__(self) -> None:
        self.stopped = False
        self.triggers: list[tuple] = []

    def stop(self) -> None:
        self.stopped = True

    def addSystemEventTrigger(self, phase, event, f, *args) -> None:
        self.triggers.append((phase, event, f, args))


def test_a_failure_while_starting_is_one_line_and_status_1():
    program = Program(
        "fileshare-peer", Main(fail(StartupError("cannot listen on --listen tcp:1: taken"))), FakeReactor()
    )

    with pytest.raises(SystemExit) as raised:
        program.startService()

    assert raised.value.code == "fileshare-peer: cannot listen on --listen tcp:1: taken"


def test_a_failure_after_the_reactor_runs_stops_it_with_status_1():
    reactor = FakeReactor()
    started: Deferred = Deferred()
    program = Program("fileshare-peer", Main(started), reactor)
    program.startService()
    assert not reactor.stopped

    started.errback(StartupError("repository unreadable"))

    assert reactor.stopped
    assert reactor.triggers == [("after", "shutdown", os._exit, (1,))]
    assert program.exit_status == 1


def test_a_successful_start_changes_nothing():
    reactor = FakeReactor()
    program = Program("fileshare-tracker", Main(succeed(None)), reactor)

    program.startService()

    assert not reactor.stopped and reactor.triggers == [] and program.exit_status == 0


def test_first_failure_fails_with_the_failure_itself():
    d = first_failure([succeed(1), fail(StartupError("second")), succeed(3)])
    errors: list = []
    d.addErrback(errors.append)

    assert errors[0].check(StartupError) and errors[0].getErrorMessage() == "second"
