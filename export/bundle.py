"""The model bundle: a directory of ONNX graphs (and, on GPU hosts, engines) plus ``manifest.json``.

The manifest is the contract between export and the runtime: input size and channel spec, calibration
(thresholds, map scale), and a sha256 per file. Loading checks the schema version and every checksum, so a
truncated copy or a hand-edited graph is refused by name instead of producing wrong maps. No torch here:
the runtime imports this module.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    NonNegativeInt,
    PositiveInt,
    StrictBool,
    ValidationError,
    model_validator,
)

from edge_ad import __version__
from edge_ad.calibration_record import BundleCalibration, checked_calibration, first_error
from edge_ad.errors import UserError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entries(bundle_dir: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    return {n: {"sha256": sha256_file(bundle_dir / n), "bytes": (bundle_dir / n).stat().st_size} for n in names}


def write_manifest(bundle_dir: Path, manifest: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """Complete ``manifest`` with schema, versions and checksums of ``files``, and write it."""
    full = {
        "schema_version": SCHEMA_VERSION,
        "edge_ad_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        **manifest,
        "files": file_entries(bundle_dir, files),
    }
    (bundle_dir / MANIFEST).write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")
    return full


def add_files(bundle_dir: Path, names: list[str]) -> None:
    """Register extra files (engines built later on a GPU host) in an existing manifest."""
    path = bundle_dir / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["files"].update(file_entries(bundle_dir, names))
    path.write_text(json.dumps(manifest, indent=2) + "\n")


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]

    @property
    def input_size(self) -> tuple[int, int]:
        h, w = self.manifest["input"]["size"]
        return int(h), int(w)

    @property
    def grayscale(self) -> bool:
        return bool(self.manifest["input"]["grayscale"])

    @property
    def temporal_offsets(self) -> list[int]:
        return [int(k) for k in self.manifest["input"]["temporal_offsets"]]

    @property
    def fps(self) -> float | None:
        """The frame rate the model was trained and calibrated at; older bundles have it in their config only."""
        rate = self.manifest["input"].get("fps")
        if rate is None:
            rate = self.manifest.get("config", {}).get("scoring", {}).get("assumed_fps")
        return float(rate) if rate else None

    @property
    def channels(self) -> int:
        return int(self.manifest["input"]["channels"])

    @property
    def calibration(self) -> dict[str, Any]:
        return self.manifest["calibration"]

    @property
    def threshold(self) -> float:
        """Frame-score threshold for alerts, set from the false-alarm budget on normal validation clips."""
        return float(self.calibration["threshold"])

    @property
    def pixel_threshold(self) -> float:
        """Map value above which a pixel belongs to an anomalous region (for boxes and overlays)."""
        return float(self.calibration["pixel_threshold"])

    @property
    def map_scale(self) -> float:
        """Map value published as 255 when maps are sent as uint8."""
        return float(self.calibration["map_scale"])

    def graph(self, name: str) -> Path:
        graphs = self.manifest.get("graphs", {})
        if name not in graphs:
            raise UserError(f"bundle {self.path} has no '{name}' graph (it has: {', '.join(sorted(graphs))})")
        return self.path / graphs[name]

    def has_file(self, name: str) -> bool:
        return name in self.manifest.get("files", {})


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle directory, refusing a wrong schema or a file whose checksum does not match."""
    root = Path(path)
    if not root.exists():
        raise UserError(f"bundle not found: {root} (make one with `edge-ad export --run RUN --out {root}`)")
    if not root.is_dir():
        raise UserError(f"bundle must be a directory holding manifest.json: {root}")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise UserError(f"{root} is not a bundle: no {MANIFEST} (was the export interrupted?)")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{mpath}: corrupt manifest ({e}); export the bundle again") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{mpath}: corrupt manifest (not a JSON object); export the bundle again")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(
            f"{root}: bundle schema version {version!r}, this edge-ad ({__version__}) reads version "
            f"{SCHEMA_VERSION}; export it again with this version"
        )
    for key in ("input", "calibration", "graphs", "files"):
        if key not in manifest:
            raise UserError(f"{mpath}: corrupt manifest (no '{key}'); export the bundle again")
    _check_shape(manifest, mpath)  # what the runtime reads: a hand edit fails here, in one line, not mid-stream
    manifest["calibration"] = checked_calibration(
        manifest["calibration"], f"{mpath} (its calibration)", "export the bundle again", BundleCalibration
    )
    bundle = Bundle(root, manifest)
    if verify:
        verify_files(root, manifest["files"])
    return bundle


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Input(_Open):
    size: tuple[PositiveInt, PositiveInt]
    grayscale: StrictBool
    temporal_offsets: list[PositiveInt]
    channels: PositiveInt
    fps: Annotated[FiniteFloat, Field(gt=0.0)] | None = None

    @model_validator(mode="after")
    def _channels_follow(self) -> _Input:
        expected = (1 if self.grayscale else 3) * (1 + len(self.temporal_offsets))
        if self.channels != expected:
            raise ValueError(
                f"{self.channels} channels, but grayscale={self.grayscale} with temporal_offsets "
                f"{self.temporal_offsets} makes {expected}"
            )
        return self


class _FileEntry(_Open):
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    bytes: NonNegativeInt


class _Manifest(_Open):
    input: _Input
    graphs: dict[str, str]
    files: dict[str, _FileEntry]

    @model_validator(mode="after")
    def _graphs_are_checked(self) -> _Manifest:
        unlisted = sorted(f for f in self.graphs.values() if f not in self.files)
        if unlisted:
            raise ValueError(f"graph file {unlisted[0]} has no checksum in 'files'")
        return self


def _check_shape(manifest: dict[str, Any], mpath: Path) -> None:
    try:
        _Manifest.model_validate(manifest)
    except ValidationError as e:
        raise UserError(f"{mpath}: corrupt manifest ({first_error(e)}); export the bundle again") from None


def verify_files(root: Path, files: dict[str, dict[str, Any]]) -> None:
    for name, entry in files.items():
        f = root / name
        if not f.is_file():
            raise UserError(f"bundle {root}: {name} is missing; copy the whole bundle directory")
        if f.stat().st_size != entry["bytes"]:
            raise UserError(
                f"bundle {root}: {name} has {f.stat().st_size} bytes, the manifest says {entry['bytes']} "
                "(truncated or replaced); copy the bundle again"
            )
        if sha256_file(f) != entry["sha256"]:
            raise UserError(f"bundle {root}: {name} does not match its sha256 (tampered or corrupt); copy it again")
