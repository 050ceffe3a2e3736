"""``edge-ad synth`` and ``edge-ad data info`` (owned by the data work; placeholder registration)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
