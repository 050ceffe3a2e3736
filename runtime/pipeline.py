"""The streaming pipeline: capture -> queues -> micro-batches -> inference -> alerts -> ZeroMQ.

Threads, in the order a frame meets them:

* capture, one per stream: reads frames, turns each into the model's input (``to_model_frame`` and the
  stream's ``ChannelBuilder``) and queues it. The temporal channels are built here, in capture order and
  from every frame, so a frame dropped later from a full queue still serves as the past of the next ones.
* the queues, one per stream: a live stream that outruns the model drops its oldest frame (counted as
  ``queue_full``); a replay waits for room, so no frame of a file is lost.
* inference, one thread: takes up to ``max_batch`` frames across streams, oldest first, waiting at most
  ``latency_budget_ms`` after the oldest for the batch to fill, and runs the backend.
* output, one thread: map to uint8/float16, alert state, regions, snapshot and journal, then the ZeroMQ
  messages and the heartbeats. It is the only thread that touches the socket.

The main thread prints the status line and waits for the end: replays end by themselves when every file is
done; ``stop()`` (SIGINT/SIGTERM) ends a run within two seconds, draining what it can and counting the rest
as ``shutdown`` drops.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_ad import __version__
from edge_ad.alerting import AlertEvent, AlertTracker
from edge_ad.config import RuntimeConfig, StreamConfig
from edge_ad.data.preprocess import ChannelBuilder, to_model_frame
from edge_ad.data.rate import LIVE_SAME_RATE, SAME_RATE
from edge_ad.errors import UserError
from edge_ad.export.bundle import MANIFEST, Bundle
from edge_ad.runtime.alerts import AlertJournal, regions, render_snapshot
from edge_ad.runtime.backends import Backend, create_backend
from edge_ad.runtime.metrics import MetricsServer, RuntimeMetrics
from edge_ad.runtime.publish import Publisher, encode_map
from edge_ad.runtime.sources import Capture, Frame, Reader, make_reader
from edge_ad.runtime.status import StatusBoard

log = logging.getLogger("edge_ad.runtime")

DRAIN_S = 0.8  # after stop(), frames still queued get this long to be scored and published
LIVE_KINDS = ("camera", "url", "gstreamer")


@dataclass
class Queued:
    frame: Frame
    tensor: np.ndarray  # [C, H, W] model input
    t_queued: float  # monotonic


@dataclass
class Scored:
    item: Queued
    amap: np.ndarray  # [H, W] float32
    score: float


class FrameQueues:
    """One bounded FIFO per stream behind one condition variable, so the batcher can wait on all of them."""

    def __init__(self, size: int, board: StatusBoard):
        self.size = size
        self.board = board
        self._queues: dict[str, deque[Queued]] = {}
        self._drop_oldest: dict[str, bool] = {}
        self._cond = threading.Condition()
        self._closed = False

    def add(self, stream: str, drop_oldest: bool) -> None:
        self._queues[stream] = deque()
        self._drop_oldest[stream] = drop_oldest

    def put(self, item: Queued) -> bool:
        """Queue a frame; False when the queues were closed (shutdown) before there was room."""
        stream = item.frame.stream
        q = self._queues[stream]
        with self._cond:
            if self._drop_oldest[stream]:
                if len(q) >= self.size:
                    q.popleft()
                    self.board.dropped(stream, "queue_full")
            else:
                while len(q) >= self.size and not self._closed:
                    self._cond.wait()
            if self._closed:
                return False
            q.append(item)
            self.board.queue_depth(stream, len(q))
            self._cond.notify_all()
        return True

    def close(self) -> None:
        """No more frames will come: wake everyone; the batcher still hands out what is queued."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _total(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def next_batch(self, max_batch: int, budget_s: float) -> list[Queued] | None:
        """Up to ``max_batch`` frames, oldest first across streams; None when closed and empty."""
        with self._cond:
            while not self._total():
                if self._closed:
                    return None
                self._cond.wait()
            oldest = min(q[0].t_queued for q in self._queues.values() if q)
            deadline = oldest + budget_s
            while self._total() < max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch: list[Queued] = []
            while len(batch) < max_batch and self._total():
                q = min((q for q in self._queues.values() if q), key=lambda q: q[0].t_queued)
                batch.append(q.popleft())
            for stream, q in self._queues.items():
                self.board.queue_depth(stream, len(q))
            self._cond.notify_all()  # room for the replays waiting in put()
            return batch


class _StreamEvents:
    """A stream's capture events: status and metrics, plus a fresh history after every (re)connection."""

    def __init__(self, board: StatusBoard, builder: ChannelBuilder):
        self.board = board
        self.builder = builder

    def connected(self, stream: str) -> None:
        self.builder.reset()
        self.board.connected(stream)

    def disconnected(self, stream: str, reason: str) -> None:
        self.board.disconnected(stream, reason)

    def reconnecting(self, stream: str) -> None:
        self.board.reconnecting(stream)

    def corrupt(self, stream: str, count: int, reason: str) -> None:
        self.board.corrupt(stream, count, reason)

    def decimated(self, stream: str) -> None:
        self.board.decimated(stream)


def bundle_sha(bundle: Bundle) -> str:
    """Short hash of the manifest, which holds every file's sha256: one label naming the exact bundle."""
    return hashlib.sha256((bundle.path / MANIFEST).read_bytes()).hexdigest()[:12]


class Runtime:
    """One process running one bundle on several named streams; ``run()`` is what ``edge-ad run`` calls."""

    def __init__(
        self,
        bundle: Bundle,
        cfg: RuntimeConfig,
        streams: list[StreamConfig],
        *,
        max_frames: int | None = None,
        backend_factory: Callable[[], Backend] | None = None,
    ):
        if not streams:
            raise UserError("no source: give --camera, --video, --frames or --url, or runtime.streams in --config")
        self.bundle = bundle
        self.cfg = cfg
        self.streams = streams
        self.max_frames = max_frames
        self._backend_factory = backend_factory or self._make_backend
        # Everything a user can get wrong about the sources is checked before anything binds a port.
        self.readers: dict[str, Reader] = {s.name: make_reader(s, bundle.grayscale, cfg.watchdog_s) for s in streams}
        self.threshold = cfg.alerts.threshold or bundle.threshold
        # The frame rate the model's motion was learnt at; 0 in the config scores every frame.
        self.rate = (bundle.fps if cfg.analysis_fps is None else cfg.analysis_fps) or None
        if cfg.analysis_fps and bundle.fps and abs(cfg.analysis_fps - bundle.fps) > (SAME_RATE - 1) * bundle.fps:
            log.warning(
                f"runtime.analysis_fps {cfg.analysis_fps:g} is not the model's {bundle.fps:g} frames/s: motion will "
                "look otherwise than in calibration"
            )
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self.metrics = RuntimeMetrics(__version__, cfg.backend, bundle_sha(bundle))
        self.board = StatusBoard(self.metrics, cfg.watchdog_s)
        self.queues = FrameQueues(cfg.queue_size, self.board)
        self._outbox: queue.Queue[Scored | None] = queue.Queue(maxsize=4 * cfg.max_batch)
        self._builders = {s.name: ChannelBuilder(bundle.temporal_offsets) for s in streams}
        self._trackers = {s.name: AlertTracker(s.name, self.threshold, cfg.alerts) for s in streams}
        self._last: dict[str, Scored] = {}
        # The index of each ended stream's last queued frame (None: none was): once the output thread has
        # published it, that stream's open alert ends there, not when the whole run does.
        self._final: dict[str, int | None] = {}
        self._producers = len(streams)
        self._producers_lock = threading.Lock()
        self._stopped_at: float | None = None
        self._threads: list[threading.Thread] = []
        self._failure: BaseException | None = None
        self._closing = False
        self.journal: AlertJournal | None = None
        self.publisher: Publisher | None = None
        self.metrics_server: MetricsServer | None = None
        self.backend: Backend | None = None
        for s in streams:
            self.board.add(s.name, live=s.kind in LIVE_KINDS)
            self.queues.add(s.name, drop_oldest=s.kind in LIVE_KINDS)

    # Life cycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the journal, the socket, the metrics endpoint and the backend, then start the threads."""
        cfg = self.cfg
        try:
            self.journal = AlertJournal(cfg.journal_dir)
            self.publisher = Publisher(
                cfg.endpoint, cfg.sndhwm, cfg.curve, cfg.curve_secret_file, cfg.curve_clients_dir
            )
            self.metrics_server = MetricsServer(cfg.metrics_host, cfg.metrics_port, self.metrics.registry, self.health)
            self.backend = self._backend_factory()
            self._warm_up()
        except BaseException:
            self.close()
            raise
        h, w = self.bundle.input_size
        log.info(
            f"bundle {self.bundle.path} ({bundle_sha(self.bundle)}, {w}x{h}, threshold {self.threshold:.4g}) on "
            f"{self.backend.name}; publishing on {self.publisher.endpoint}; metrics on {self.metrics_server.url}/metrics"
        )
        log.info(f"ZeroMQ: {self.publisher.security}")
        for warning in self.publisher.warnings:
            log.warning(warning)
        if cfg.wait_subscribers:
            self._wait_for_subscribers()
        self._spawn("output", self._output_loop)
        self._spawn("inference", self._inference_loop)
        for s in self.streams:
            capture = Capture(
                s.name,
                self.readers[s.name],
                _StreamEvents(self.board, self._builders[s.name]),
                self.stop_event,
                pace=s.pace or cfg.pace,
                loop=s.loop,
                max_frames=self.max_frames,
                reconnect_initial_s=cfg.reconnect_initial_s,
                reconnect_max_s=cfg.reconnect_max_s,
                rate=self.rate,
            )
            self._spawn(f"capture-{s.name}", self._capture_loop, capture)

    def _wait_for_subscribers(self) -> None:
        assert self.publisher is not None
        want, limit = self.cfg.wait_subscribers, self.cfg.wait_subscribers_s
        log.info(f"waiting up to {limit:g} s for {want} subscriber(s) on {self.publisher.endpoint}")
        seen = self.publisher.wait_for_subscribers(want, limit, self.stop_event)
        if seen < want and not self.stop_event.is_set():
            log.warning(f"only {seen} of {want} subscriber(s) after {limit:g} s; starting anyway")

    def _make_backend(self) -> Backend:
        options: dict[str, object] = {"max_batch": self.cfg.max_batch}
        if self.cfg.backend == "onnxruntime":
            options.update(providers=self.cfg.providers or None, threads=self.cfg.threads)
        return create_backend(self.cfg.backend, self.bundle, **options)

    def _warm_up(self) -> None:
        """One inference before the first frame, so session set-up does not land on the first frame's latency."""
        assert self.backend is not None
        self.backend.infer(np.zeros((1, self.bundle.channels, *self.bundle.input_size), np.float32))

    def _spawn(self, name: str, target: Callable, *args: object) -> None:
        def guarded() -> None:
            try:
                target(*args)
            except BaseException as e:  # a bug: stop the run and report it, rather than hang
                if self._closing:
                    return  # torn down under a thread that overran the shutdown deadline: not a failure
                log.exception("thread %s failed", name)
                self._failure = e
                self.stop()
                self.done.set()

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        """Ask the run to end (signal handlers call this): sources stop, queued frames drain briefly."""
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        self.stop_event.set()
        self.queues.close()

    def run(self, status: Callable[[str], None] | None = None) -> int:
        """Start, print the status line every ``status_every_s``, and close when done; returns the exit code."""
        say = status or log.info
        self.start()
        try:
            while not self.done.wait(self.cfg.status_every_s):
                say(self.board.status_line())
        finally:
            self.close()
        say("done: " + self.board.status_line())
        if self._failure is not None:
            return 1
        return 0 if self._stopped_at is not None else self._replays_that_gave_nothing()

    def _replays_that_gave_nothing(self) -> int:
        """2 when a replay ended without one frame decoded: a file that is all damage is an error, not a run."""
        empty = [s.name for s in self.board.streams.values() if not s.live and s.captured == 0]
        if empty:
            log.error(f"{', '.join(empty)}: not one frame could be decoded; check the file or folder")
        return 2 if empty else 0

    def close(self) -> None:
        """Wait for the output thread (bounded), then close the journal, the socket, the endpoint, the backend."""
        out = next((t for t in self._threads if t.name == "output"), None)
        if out is not None:
            out.join(timeout=DRAIN_S + 0.5)
        self._closing = True
        if self.journal is not None:
            self.journal.close()
        if self.publisher is not None:
            # A finished replay gives slow subscribers a second for the last messages; a stop keeps its 2 s promise.
            self.publisher.close(linger_ms=300 if self._stopped_at is not None else 1000)
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self.backend is not None:
            self.backend.close()

    def health(self) -> tuple[bool, dict]:
        return self.board.health()

    # Threads ----------------------------------------------------------------------------------------------

    def _capture_loop(self, capture: Capture) -> None:
        name = capture.stream
        builder = self._builders[name]
        size, gray = self.bundle.input_size, self.bundle.grayscale
        said_size = False
        said_rate: set[str] = set()
        last_queued: int | None = None
        try:
            for frame in capture.frames():
                self._say_rate(capture, said_rate)
                self.board.captured(name)
                self.board.stage("capture", capture.read_seconds)
                t0 = time.perf_counter()
                tensor = builder.push(to_model_frame(frame.image, size, gray))
                self.board.stage("preprocess", time.perf_counter() - t0)
                if not said_size and frame.image.shape[:2] != size:
                    said_size = True
                    h, w = frame.image.shape[:2]
                    log.info(f"{name}: frames are {w}x{h}, the model takes {size[1]}x{size[0]}: resizing")
                if not self.queues.put(Queued(frame, tensor, time.monotonic())):
                    self.board.dropped(name, "shutdown")
                    break
                last_queued = frame.index
        finally:
            self._final[name] = last_queued
            self.board.finished(name, stopped=self.stop_event.is_set())
            with self._producers_lock:
                self._producers -= 1
                last = self._producers == 0
            if last:
                self.queues.close()

    def _say_rate(self, capture: Capture, said: set[str]) -> None:
        """At what rate a stream is scored, once each: when decimation starts (a live source's rate is measured
        over its first frames), when the source is slower than the model, or says nothing of its rate."""
        name, gate, rate = capture.stream, capture.gate, self.rate
        if rate is None:
            return
        source = gate.source_rate
        if gate.active and "active" not in said:
            said.add("active")
            log.info(f"{name}: {source:g} frames/s; scoring {rate:g} a second, the model's rate (runtime.analysis_fps)")
        elif (
            source is not None
            and source < rate / (LIVE_SAME_RATE if gate.measure else SAME_RATE)
            and "slow" not in said
        ):
            said.add("slow")
            log.warning(
                f"{name}: {source:.3g} frames/s, below the model's {rate:g}: motion looks faster than the model "
                "learnt, so alerts may not mean what calibration set; record at the model's rate or retrain"
            )
        elif source is None and not gate.measure and "unknown" not in said:
            said.add("unknown")
            log.info(f"{name}: the file does not say its frame rate; scoring every frame (the model's: {rate:g})")

    def _draining_too_long(self) -> bool:
        return self._stopped_at is not None and time.monotonic() - self._stopped_at > DRAIN_S

    def _inference_loop(self) -> None:
        assert self.backend is not None
        try:
            budget_s = self.cfg.latency_budget_ms / 1000.0
            while (batch := self.queues.next_batch(self.backend.max_batch, budget_s)) is not None:
                if self._draining_too_long():
                    for item in batch:
                        self.board.dropped(item.frame.stream, "shutdown")
                    continue
                t0 = time.perf_counter()
                result = self.backend.infer(np.stack([item.tensor for item in batch]))
                self.board.stage("inference", time.perf_counter() - t0)
                for i, item in enumerate(batch):
                    self._outbox.put(Scored(item, result.maps[i], float(result.scores[i])))
        finally:
            self._outbox.put(None)

    def _output_loop(self) -> None:
        assert self.publisher is not None
        next_beat = time.monotonic()
        while True:
            try:
                scored = self._outbox.get(timeout=max(next_beat - time.monotonic(), 0.0))
            except queue.Empty:
                scored = False
            if scored is None:
                break
            if scored:
                self._emit(scored)
            self._end_finished_streams()
            if time.monotonic() >= next_beat:
                self._heartbeats()
                next_beat = time.monotonic() + self.cfg.heartbeat_s
        self._end_alerts()
        self._heartbeats()
        self.done.set()

    # Output -----------------------------------------------------------------------------------------------

    def _emit(self, scored: Scored) -> None:
        assert self.publisher is not None and self.journal is not None
        frame = scored.item.frame
        stream = frame.stream
        t0 = time.perf_counter()
        tracker = self._trackers[stream]
        event = tracker.update(frame.index, frame.ts_capture, scored.score)
        data = encode_map(scored.amap, self.cfg.map_dtype, self.bundle.map_scale)
        jpeg = self._journal_event(event, scored) if event else None
        alert_id = tracker.active_id or (event.alert_id if event else None)
        t1 = time.perf_counter()
        self.board.stage("postprocess", t1 - t0)
        self.publisher.send_map(
            stream, frame.index, frame.ts_capture, data, scored.score, alert_id, self.bundle.map_scale
        )
        if event:
            self.publisher.send_alert(event, jpeg)
        self.board.stage("publish", time.perf_counter() - t1)
        self.board.published(stream, time.time() - frame.ts_capture, scored.score)
        self._last[stream] = scored

    def _journal_event(self, event: AlertEvent, scored: Scored) -> bytes | None:
        """Regions and snapshot for an alert event, written to the journal before anything is sent."""
        assert self.journal is not None
        image = scored.item.frame.image
        event.boxes = regions(scored.amap, self.bundle.pixel_threshold, image.shape[:2], self.cfg.alerts.max_boxes)
        jpeg = None
        if self.cfg.alerts.snapshot:
            jpeg = render_snapshot(image, scored.amap, self.bundle.map_scale, self.bundle.pixel_threshold, event.boxes)
        self.journal.record(event, jpeg)
        if event.event == "start":
            self.board.alert_started(event.stream)
            log.warning(
                f"{event.stream}: alert {event.alert_id} started at frame {event.frame_index} (score {event.score:.4g})"
            )
        elif event.event == "end":
            log.info(
                f"{event.stream}: alert {event.alert_id} ended at frame {event.frame_index} "
                f"(peak {event.peak_score:.4g})"
            )
        return jpeg

    def _end_finished_streams(self) -> None:
        """A stream that ended (a replay done, a source given up on) closes its alert at its last frame, so that
        a file that finished beside a live camera does not leave its alert open until the run stops."""
        for stream, final in list(self._final.items()):
            last = self._last.get(stream)
            if final is None or (last is not None and last.item.frame.index == final):
                del self._final[stream]
                self._end_alert(stream)

    def _end_alerts(self) -> None:
        """Close the alerts still open when the run ends, so every start in the journal has its end."""
        for stream in self._trackers:
            self._end_alert(stream)

    def _end_alert(self, stream: str) -> None:
        assert self.publisher is not None
        last = self._last.get(stream)
        if last is None:
            return
        event = self._trackers[stream].finish(last.item.frame.index, last.item.frame.ts_capture, last.score)
        if event:
            jpeg = self._journal_event(event, last)
            self.publisher.send_alert(event, jpeg)

    def _heartbeats(self) -> None:
        assert self.publisher is not None
        self.publisher.drain()
        for s in self.streams:
            self.publisher.send_heartbeat(s.name, self.board.heartbeat(s.name))
