"""The progress line: its bar, its figures, and the time left."""

from __future__ import annotations

import io

from p2pfl import progress
from p2pfl.progress import Progress


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_time_left_is_the_mean_round_since_the_first_times_the_rounds_left(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = io.StringIO()
    bar = Progress(1000, width=10, stream=out)
    clock.now += 30.0  # start-up: not a round
    bar.update(1, "acc 0.100")
    clock.now += 2.5
    bar.update(2, "acc 0.200")  # 2.5 s a round: 998 left
    clock.now += 0.5
    bar.update(3, "acc 0.300")  # under 2 s since the last line: in a log, skipped
    clock.now += 2.0
    bar.update(4, "acc 0.400")  # 5 s for 3 rounds since the first: 996 left
    clock.now += 3600.0
    bar.update(1000, "acc 0.900")
    lines = out.getvalue().splitlines()
    assert lines == ["[----------] round 1/1000 | acc 0.100 | 30.0 s",
                     "[----------] round 2/1000 | acc 0.200 | 32.5 s | eta 41m35s",
                     "[----------] round 4/1000 | acc 0.400 | 35.0 s | eta 27m40s",
                     "[##########] round 1000/1000 | acc 0.900 | 3635.0 s"]


def test_durations_read_as_a_person_would_say_them():
    assert [progress._duration(s) for s in (0.4, 59.4, 60, 3599, 3600, 7620)] == [
        "0 s", "59 s", "1m00s", "59m59s", "1h00m", "2h07m"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_clock_goes_on_while_no_round_ends(monkeypatch):
    """It stood at "2.9 s" for the 150 s a run waited for a stopped host process."""
    clock = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = _Terminal()
    bar = Progress(20, width=4, stream=out)
    clock.now += 2.9
    bar.update(8, "acc 0.500")
    clock.now += 0.5
    bar.tick()  # within a second of the last drawing: nothing
    clock.now += 150.0
    bar.tick()
    drawn = out.getvalue().split("\r")[1:]
    assert len(drawn) == 2 and drawn[0] == "[#---] round 8/20 | acc 0.500 | 2.9 s"
    assert drawn[1].startswith("[#---] round 8/20 | acc 0.500 | 153.4 s"), drawn
    Progress(20, stream=io.StringIO()).tick()  # not a terminal, nothing drawn: no error


def test_a_log_hears_of_a_long_wait(monkeypatch):
    """Off a terminal nothing was printed while a run waited minutes for a stopped host:
    the last line comes again, with the time so far, every 30 s of waiting."""
    clock = _Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    out = io.StringIO()
    bar = Progress(20, width=4, stream=out)
    bar.tick()  # nothing shown yet: nothing to repeat
    clock.now += 2.0
    bar.update(8, "acc 0.500")
    clock.now += 29.0
    bar.tick()
    clock.now += 1.0
    bar.tick()
    clock.now += 10.0
    bar.tick()
    assert out.getvalue().splitlines() == ["[#---] round 8/20 | acc 0.500 | 2.0 s",
                                           "[#---] round 8/20 | acc 0.500 | 32.0 s"]
