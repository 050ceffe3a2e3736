"""The engine cache: which serialized engine belongs to which graph, TensorRT version, GPU and precision.

A TensorRT engine only deserializes on the TensorRT version and GPU architecture it was built with; a
bundle copied to a new box (or a box whose TensorRT was upgraded) must rebuild, not crash. So every engine
is filed under a key hashed from everything that makes it valid, the cache directory keeps an index of what
each file was built with, and the runtime recomputes the key for its own host before deserializing.
Stdlib only: the runtime imports this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_ad.errors import UserError
from edge_ad.export.bundle import MANIFEST, add_files, sha256_file

if TYPE_CHECKING:
    from edge_ad.export.bundle import Bundle

ENGINES_DIR = "engines"
INDEX = "index.json"
KEY_SCHEMA = "edge-ad-engine-v1"
REBUILD_HINT = "run `edge-ad export --engines` on this host"


def engine_cache_key(
    onnx_sha256: str, trt_version: str, compute_capability: str, precision: str, max_batch: int, opt_batch: int
) -> str:
    """sha256 hex of the fields that decide whether an engine is valid (same inputs, same key, always)."""
    fields = {
        "schema": KEY_SCHEMA,
        "onnx_sha256": onnx_sha256,
        "trt_version": str(trt_version),
        "compute_capability": str(compute_capability),
        "precision": precision,
        "max_batch": int(max_batch),
        "opt_batch": int(opt_batch),
    }
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def engine_filename(graph_name: str, key: str) -> str:
    return f"{graph_name}-{key[:16]}.engine"


@dataclass(frozen=True)
class EngineRecord:
    """What one engine file was built from and for; the index and the manifest hold these fields."""

    graph: str
    file: str  # file name inside the cache directory
    key: str
    onnx_sha256: str
    trt_version: str
    compute_capability: str
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int
    built: str = ""
    host: str = ""

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "file": f"{ENGINES_DIR}/{self.file}",
            "key": self.key,
            "trt_version": self.trt_version,
            "compute_capability": self.compute_capability,
            "precision": self.precision,
            "max_batch": self.max_batch,
            "opt_batch": self.opt_batch,
        }


class EngineCache:
    """A directory of ``<graph>-<key16>.engine`` files plus ``index.json`` describing each."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    @property
    def index_path(self) -> Path:
        return self.dir / INDEX

    def records(self) -> dict[str, EngineRecord]:
        if not self.index_path.is_file():
            return {}
        try:
            raw = json.loads(self.index_path.read_text())
            return {name: EngineRecord(**entry) for name, entry in raw.get("engines", {}).items()}
        except (json.JSONDecodeError, TypeError, AttributeError) as e:
            raise UserError(
                f"{self.index_path}: corrupt engine index ({e}); delete it to rebuild the engines"
            ) from None

    def lookup(self, key: str) -> EngineRecord | None:
        """The record for ``key`` if its engine file is still there."""
        for record in self.records().values():
            if record.key == key and (self.dir / record.file).is_file():
                return record
        return None

    def store(self, record: EngineRecord, data: bytes) -> Path:
        """Write the engine and its index entry, each atomically, so an interrupted build leaves no half file."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / record.file
        _atomic_write(path, data)
        records = self.records()
        records[record.file] = record
        index = {"version": 1, "engines": {name: asdict(r) for name, r in sorted(records.items())}}
        _atomic_write(self.index_path, (json.dumps(index, indent=2) + "\n").encode())
        return path


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def register_engines(bundle_dir: Path, records: dict[str, EngineRecord], cache_dir: Path | None = None) -> None:
    """Put the engines (and the index) in the bundle's ``engines/`` and list them in its manifest.

    With a shared ``cache_dir`` outside the bundle the files are copied in, since the manifest only refers
    to files inside the bundle. Checksums go through ``add_files`` like every other bundle file.
    """
    bundle_dir = Path(bundle_dir)
    target = bundle_dir / ENGINES_DIR
    source = Path(cache_dir) if cache_dir is not None else target
    if source.resolve() != target.resolve():
        local = EngineCache(target)
        for record in records.values():
            local.store(record, (source / record.file).read_bytes())
    add_files(bundle_dir, [f"{ENGINES_DIR}/{r.file}" for r in records.values()])
    path = bundle_dir / MANIFEST
    manifest = json.loads(path.read_text())
    engines = manifest.get("engines") or {}
    engines.update({graph: record.manifest_entry() for graph, record in records.items()})
    manifest["engines"] = engines
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def graph_sha256(bundle: Bundle, graph: str) -> str:
    """The graph's checksum from the manifest (verified when the bundle was loaded), or from the file."""
    rel = bundle.manifest["graphs"][graph]
    entry = bundle.manifest.get("files", {}).get(rel)
    return entry["sha256"] if entry else sha256_file(bundle.path / rel)


def resolve_engine(bundle: Bundle, graph: str, trt_version: str, compute_capability: str) -> tuple[Path, dict]:
    """The engine for ``graph`` that is valid on this TensorRT and GPU, or a ``UserError`` saying to rebuild."""
    engines = bundle.manifest.get("engines") or {}
    if graph not in engines:
        raise UserError(f"bundle {bundle.path} has no TensorRT engine for '{graph}'; {REBUILD_HINT}")
    entry = engines[graph]
    want = engine_cache_key(
        graph_sha256(bundle, graph),
        trt_version,
        compute_capability,
        entry["precision"],
        entry["max_batch"],
        entry["opt_batch"],
    )
    if entry["key"] == want:
        return bundle.path / entry["file"], entry
    # An engine built earlier on this kind of host may still be in the bundle's cache (and its manifest).
    cached = EngineCache(bundle.path / ENGINES_DIR).lookup(want)
    if cached is not None and bundle.has_file(f"{ENGINES_DIR}/{cached.file}"):
        return bundle.path / ENGINES_DIR / cached.file, cached.manifest_entry()
    if (entry["trt_version"], entry["compute_capability"]) == (str(trt_version), str(compute_capability)):
        why = "from another version of the graph"
    else:
        why = (
            f"for TensorRT {entry['trt_version']} on compute capability {entry['compute_capability']}, "
            f"this host has TensorRT {trt_version} on {compute_capability}"
        )
    raise UserError(f"the '{graph}' engine in {bundle.path} was built {why}; {REBUILD_HINT}")
