"""Where a training run keeps its files, so train, calibrate, eval and export agree on the names."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_ad.config import Config, load_config
from edge_ad.errors import UserError


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def vqvae(self) -> Path:
        return self.root / "vqvae.safetensors"

    @property
    def vqvae_last(self) -> Path:
        return self.root / "vqvae.last.safetensors"

    @property
    def prior(self) -> Path:
        return self.root / "prior.safetensors"

    @property
    def prior_last(self) -> Path:
        return self.root / "prior.last.safetensors"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def split(self) -> Path:
        return self.root / "split.json"

    @property
    def calibration(self) -> Path:
        return self.root / "calibration.json"

    @property
    def normalisation(self) -> Path:
        """Each map's calibrated centre and scale, per pixel: too large for calibration.json."""
        return self.root / "normalisation.safetensors"

    def prepare(self) -> None:
        """Create the directory and prove it is writable before spending minutes on training."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"  # one per process: torchrun's ranks probe at once
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise UserError(f"cannot write the run directory {self.root}: {e.strerror}; choose another --out") from None

    def load_config(self) -> Config:
        if not self.root.is_dir():
            raise UserError(f"run directory not found: {self.root} (train one with `edge-ad train --out {self.root}`)")
        if not self.config.is_file():
            raise UserError(f"{self.root} is not a training run: no config.yaml")
        return load_config(self.config)

    def require(self, *names: str) -> None:
        for n in names:
            p = getattr(self, n)
            if not p.is_file():
                raise UserError(f"{self.root} has no {p.name}; run `edge-ad train --out {self.root}` first")

    def read_json(self, name: str) -> dict[str, Any]:
        """A run file as written; a damaged one (a crash mid-write, a hand edit) is a user error that names it."""
        path = getattr(self, name)
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError, IsADirectoryError):
            data = None
        if not isinstance(data, dict):
            raise UserError(f"{path} is damaged (not a JSON object); {_REMAKE.get(name, 'train the run again')}")
        return data

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        getattr(self, name).write_text(json.dumps(data, indent=2) + "\n")

    def append_log(self, record: dict[str, Any]) -> None:
        with open(self.log, "a") as f:
            f.write(json.dumps(record) + "\n")


# How to make each run file again, for the message when one is damaged.
_REMAKE = {
    "calibration": "run `edge-ad calibrate --run` on the run again",
    "split": "train the run again (it records which clips were held out)",
}
