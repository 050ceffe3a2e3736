"""Queue policies and micro-batching: live streams drop the oldest (counted), replays wait and lose nothing."""

from __future__ import annotations

import threading
import time

import numpy as np

from edge_ad.runtime.metrics import RuntimeMetrics
from edge_ad.runtime.pipeline import FrameQueues, Queued
from edge_ad.runtime.sources import Frame
from edge_ad.runtime.status import StatusBoard


def setup(size: int, streams: dict[str, bool]) -> tuple[FrameQueues, StatusBoard]:
    board = StatusBoard(RuntimeMetrics("test", "onnxruntime", "0"), watchdog_s=5.0)
    queues = FrameQueues(size, board)
    for name, live in streams.items():
        board.add(name, live)
        queues.add(name, drop_oldest=live)
    return queues, board


def item(stream: str, index: int) -> Queued:
    return Queued(Frame(stream, index, time.time(), np.zeros((2, 2), np.uint8)), np.zeros((1, 2, 2)), time.monotonic())


def dropped(board: StatusBoard, stream: str, reason: str) -> float:
    value = board.metrics.registry.get_sample_value(
        "edge_ad_frames_dropped_total", {"stream": stream, "reason": reason}
    )
    return value or 0.0


def test_live_queue_drops_the_oldest_and_counts_it() -> None:
    queues, board = setup(3, {"cam": True})
    for i in range(5):
        assert queues.put(item("cam", i))
    batch = queues.next_batch(8, 0.0)
    assert batch is not None and [b.frame.index for b in batch] == [2, 3, 4]
    assert dropped(board, "cam", "queue_full") == 2.0


def test_replay_queue_blocks_until_there_is_room_and_loses_nothing() -> None:
    queues, board = setup(2, {"file": False})
    done = threading.Event()

    def produce() -> None:
        for i in range(10):
            queues.put(item("file", i))
        done.set()
        queues.close()

    threading.Thread(target=produce, daemon=True).start()
    time.sleep(0.1)
    assert not done.is_set()  # the producer waits for room instead of dropping
    seen = []
    while (batch := queues.next_batch(3, 0.0)) is not None:
        seen += [b.frame.index for b in batch]
    assert seen == list(range(10))
    assert dropped(board, "file", "queue_full") == 0.0


def test_batch_waits_for_the_latency_budget_then_goes_with_what_it_has() -> None:
    queues, _ = setup(16, {"cam": True})
    queues.put(item("cam", 0))
    t0 = time.monotonic()
    batch = queues.next_batch(8, 0.15)
    waited = time.monotonic() - t0
    assert batch is not None and len(batch) == 1
    assert 0.1 <= waited < 0.5


def test_a_full_batch_does_not_wait() -> None:
    queues, _ = setup(16, {"cam": True})
    for i in range(8):
        queues.put(item("cam", i))
    t0 = time.monotonic()
    batch = queues.next_batch(8, 5.0)
    assert batch is not None and len(batch) == 8
    assert time.monotonic() - t0 < 0.5


def test_batches_mix_streams_oldest_first_and_keep_each_stream_in_order() -> None:
    queues, _ = setup(16, {"a": True, "b": False})
    for i in range(3):
        queues.put(item("a", i))
        queues.put(item("b", i))
    batch = queues.next_batch(4, 0.0)
    assert batch is not None
    assert [(b.frame.stream, b.frame.index) for b in batch] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]


def test_close_wakes_a_blocked_replay_and_ends_the_batches() -> None:
    queues, _ = setup(1, {"file": False})
    queues.put(item("file", 0))
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(queues.put(item("file", 1))), daemon=True)
    t.start()
    time.sleep(0.05)
    queues.close()
    t.join(timeout=1.0)
    assert result == [False]  # refused, so the caller counts it as a shutdown drop
    batch = queues.next_batch(8, 0.0)
    assert batch is not None and [b.frame.index for b in batch] == [0]
    assert queues.next_batch(8, 0.0) is None
