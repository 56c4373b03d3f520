"""The crash policy's arithmetic: backoff doubling, the cap, the window, giving up."""

from cluster.restarts import RestartPolicy, RestartTracker


def test_backoff_doubles_up_to_the_cap_then_gives_up() -> None:
    tracker = RestartTracker(RestartPolicy(max_restarts=5, window=60, base_delay=0.5, max_delay=4))
    delays = [tracker.on_crash(now) for now in (0, 1, 2, 3, 4)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert tracker.on_crash(5) is None
    stats = tracker.statistics()
    assert (stats.restarts, stats.crashes_in_window, stats.gave_up) == (5, 5, True)


def test_crashes_older_than_the_window_are_forgotten() -> None:
    tracker = RestartTracker(RestartPolicy(max_restarts=2, window=10, base_delay=1, max_delay=60))
    assert tracker.on_crash(0) == 1
    assert tracker.on_crash(5) == 2
    # 10 s after the first crash it no longer counts: one crash in the window, so a restart again.
    assert tracker.on_crash(10) == 2
    assert tracker.on_crash(11) is None  # crashes at 5 and 10 are still inside (1, 11]
    assert tracker.on_crash(25) == 1  # all old crashes expired: the backoff starts over


def test_zero_restarts_means_the_first_crash_stops_the_cluster() -> None:
    tracker = RestartTracker(RestartPolicy(max_restarts=0))
    assert tracker.on_crash(0) is None
    assert "restarts=0" in repr(tracker)
