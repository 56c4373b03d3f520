"""Deadlines: cancel scopes with floodgate's error, time left, header propagation."""

from __future__ import annotations

import math

import floodgate
import pytest
import trio


async def test_deadline_after_raises_deadline_exceeded_at_the_deadline(autojump_clock):
    with pytest.raises(floodgate.DeadlineExceeded) as info:
        with floodgate.deadline_after(2.5):
            await trio.sleep(10)
    assert trio.current_time() == 2.5
    assert info.value.http_status == 504


async def test_time_left_follows_the_nearest_deadline(autojump_clock):
    assert floodgate.time_left() == math.inf
    with floodgate.deadline_after(5):
        await trio.sleep(1)
        assert floodgate.time_left() == pytest.approx(4)
        with floodgate.deadline_after(10):  # an inner, later deadline does not extend the outer one
            assert floodgate.time_left() == pytest.approx(4)
        with floodgate.deadline_after(None):
            assert floodgate.time_left() == pytest.approx(4)


async def test_outer_deadline_wins(autojump_clock):
    with pytest.raises(floodgate.DeadlineExceeded, match="deadline of 1s"):
        with floodgate.deadline_after(1):
            with floodgate.deadline_after(3):
                await trio.sleep(5)
    assert trio.current_time() == 1


async def test_block_that_finishes_in_time_is_untouched(autojump_clock):
    with floodgate.deadline_after(1) as scope:
        await trio.sleep(0.5)
    assert not scope.cancelled_caught


async def test_deadline_headers(autojump_clock):
    assert floodgate.deadline_headers() == {}
    with floodgate.deadline_after(2):
        await trio.sleep(0.75)
        assert floodgate.deadline_headers() == {"x-floodgate-deadline-ms": "1250"}


@pytest.mark.parametrize(
    ("headers", "default", "expected"),
    [
        ({}, 8.0, 8.0),
        ({}, None, None),
        ({"x-envoy-expected-rq-timeout-ms": "1500"}, 8.0, 1.5),
        ({"X-Floodgate-Deadline-Ms": "700", "x-envoy-expected-rq-timeout-ms": "1500"}, 8.0, 0.7),
        (
            {"x-floodgate-deadline-ms": "20000"},
            8.0,
            8.0,
        ),  # a caller cannot ask for more than the endpoint allows
        ({"x-floodgate-deadline-ms": "20000"}, None, 20.0),
        ({"x-floodgate-deadline-ms": "soon"}, 8.0, 8.0),
        ({"x-envoy-expected-rq-timeout-ms": "0"}, 8.0, 8.0),
        ({"x-floodgate-deadline-ms": "-5"}, 8.0, 8.0),
    ],
)
def test_deadline_from_headers(headers, default, expected):
    assert floodgate.deadline_from_headers(headers, default) == expected
