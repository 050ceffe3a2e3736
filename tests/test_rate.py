"""Which frames a model at 10 frames/s sees of faster sources: files timed by position, live ones by arrival."""

from __future__ import annotations

import numpy as np
import pytest

from edge_ad.data.rate import RateGate


def _kept(times: np.ndarray, rate: float, reported: float | None, measure: bool = False) -> np.ndarray:
    gate = RateGate(rate, reported, measure=measure)
    return np.array([t for t in times if gate.keep(float(t))])


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (30.0, [0, 3, 6, 9, 12, 15]),
        (29.97, [0, 3, 6, 9, 12, 15]),
        (25.0, [0, 3, 5, 8, 10, 13]),  # of frames 2 and 3, equally near 0.1 s, the later
        (12.0, [0, 1, 2, 4, 5, 6]),  # the nearest frame to each tick
        (10.0, [0, 1, 2, 3, 4, 5]),
        (10.4, [0, 1, 2, 3, 4, 5]),  # within 5 %: a container's rounding, every frame kept
    ],
)
def test_a_file_keeps_the_frame_nearest_each_tick(source: float, expected: list[int]) -> None:
    frames = np.arange(200)
    gate = RateGate(10.0, source)
    kept = [int(i) for i in frames if gate.keep(i / source)]
    assert kept[:6] == expected
    assert len(kept) == (200 if source <= 10.5 else pytest.approx(200 * 10.0 / source, abs=1.5))


def test_no_rate_or_an_unknown_source_keeps_everything() -> None:
    times = np.arange(30) / 30
    assert len(_kept(times, 10.0, None)) == 30 and len(_kept(times, None, 30.0)) == 30


def test_a_live_camera_that_reports_the_wrong_rate_is_measured() -> None:
    """A 10 frames/s camera that says 30 (and jitters by 20 ms) keeps every frame once its rate is measured;
    a 30 frames/s stream that says nothing (the ffmpeg pipe) is brought down to 10."""
    rng = np.random.default_rng(0)
    slow = np.cumsum(np.clip(rng.normal(0.1, 0.02, 600), 0.02, None))
    kept = _kept(slow, 10.0, 30.0, measure=True)
    assert len(kept) >= 600 - 6  # the first arrivals, before the rate is measured, may be thinned
    fast = np.cumsum(np.clip(rng.normal(1 / 30, 0.01, 1800), 0.005, None))
    kept = _kept(fast, 10.0, None, measure=True)
    rate = (len(kept) - 1) / (kept[-1] - kept[0])
    assert rate == pytest.approx(10.0, rel=0.05)
    assert np.diff(kept[5:]).min() > 0.05  # never two kept frames a source frame apart


def test_a_reconnection_restarts_the_clock_but_keeps_the_measured_rate() -> None:
    gate = RateGate(10.0, None, measure=True)
    kept = [t for t in np.arange(30) / 30 if gate.keep(float(t))]
    assert gate.active and len(kept) < 30
    gate.reset()
    assert gate.keep(100.0)  # the first frame after the outage: a new clock, the 99 s gap not an interval
    assert gate.source_rate == pytest.approx(30.0)


def test_a_network_that_delivers_in_bursts_is_measured_by_count_over_time() -> None:
    """A 10 frames/s camera whose frames come three at a time every 0.3 s keeps them all; a 30 frames/s one
    in bursts of three with one timestamp keeps one of each burst."""
    slow = np.repeat(np.arange(100) * 0.3, 3)
    assert len(_kept(slow, 10.0, None, measure=True)) == 300
    fast = np.repeat(np.arange(100) * 0.1, 3)
    kept = _kept(fast, 10.0, None, measure=True)
    assert len(kept) == pytest.approx(100, abs=6) and len(np.unique(kept[6:])) == len(kept[6:])  # after warm-up


@pytest.mark.parametrize(("arriving", "thinned"), [(11.5, False), (13.0, True)])
def test_a_live_source_counts_as_faster_from_a_fifth_above_the_model(arriving: float, thinned: bool) -> None:
    kept = _kept(np.arange(300) / arriving, 10.0, None, measure=True)
    assert (len(kept) < 290) == thinned
