"""Alerts on the live path: the regions an event points at, its snapshot, and the journal.

The events themselves come from ``edge_ad.alerting`` (the rule is defined once, and evaluation replays the
same rule over a test set). Every event is written to the journal (and fsync'd) before it is published: a
subscriber that was down can always recover what it missed from disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from edge_ad.alerting import AlertEvent
from edge_ad.errors import UserError

JOURNAL = "alerts.jsonl"


def regions(amap: np.ndarray, level: float, frame_hw: tuple[int, int], max_boxes: int) -> list[list[int]]:
    """Boxes [x, y, w, h] around the connected areas of ``amap > level``, in source-frame pixels, largest first."""
    mask = (amap > level).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return []
    sy, sx = frame_hw[0] / amap.shape[0], frame_hw[1] / amap.shape[1]
    comps = stats[1:]
    order = np.argsort(-comps[:, cv2.CC_STAT_AREA], kind="stable")[:max_boxes]
    boxes = []
    for x, y, w, h, _ in comps[order]:
        x0, y0 = int(np.floor(x * sx)), int(np.floor(y * sy))
        x1 = min(int(np.ceil((x + w) * sx)), frame_hw[1])
        y1 = min(int(np.ceil((y + h) * sy)), frame_hw[0])
        boxes.append([x0, y0, x1 - x0, y1 - y0])
    return boxes


def _as_bgr8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = (np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
    return img[:, :, :3].copy()


def render_snapshot(
    image: np.ndarray, amap: np.ndarray, map_scale: float, level: float, boxes: list[list[int]]
) -> bytes:
    """JPEG of the source frame with the anomalous part of the map blended in colour and the boxes drawn."""
    frame = _as_bgr8(image)
    h, w = frame.shape[:2]
    big = cv2.resize(amap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap(np.clip(big / map_scale * 255.0, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    hot = big > level
    frame[hot] = (0.5 * frame[hot] + 0.5 * heat[hot]).astype(np.uint8)
    thickness = max(1, round(min(h, w) / 200))
    for x, y, bw, bh in boxes:
        cv2.rectangle(frame, (x, y), (x + bw - 1, y + bh - 1), (0, 0, 255), thickness)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG snapshot")
    return buf.tobytes()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class AlertJournal:
    """``alerts.jsonl`` (one JSON object per event) and the snapshots, durable before anything is sent."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.path = self.directory / JOURNAL
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (open for the whole run)
            self._end_torn_line()
        except OSError as e:
            raise UserError(
                f"cannot write the alert journal {self.path}: {e.strerror}; pick a folder with --journal"
            ) from None

    def _end_torn_line(self) -> None:
        """A power cut can leave the last line half written; the next event must not be glued onto it, or
        both lines are lost to ``read_journal``."""
        if self.path.stat().st_size == 0:
            return
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        if torn:
            self._file.write("\n")
            self._file.flush()

    def record(self, event: AlertEvent, snapshot: bytes | None) -> None:
        """Write the snapshot, then the journal line; both reach the disk before this returns."""
        if snapshot:
            name = f"{event.stream}-{event.alert_id}-{event.event}-{event.frame_index}.jpg"
            _write_synced(self.directory / name, snapshot)
            event.snapshot = name
        self._file.write(json.dumps(event.to_json()) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def read_journal(path: str | Path) -> list[dict]:
    """Every event in a journal, oldest first (a torn last line from a power cut is skipped)."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
