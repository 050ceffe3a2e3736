"""CURVE certificates, read once for both ends of the socket (``edge-ad run`` and ``edge-ad subscribe``)."""

from __future__ import annotations

from pathlib import Path

import zmq.auth

from edge_ad.errors import UserError


def secret_certificate(path: Path, whose: str, flag: str) -> tuple[bytes, bytes]:
    """(public, secret) from a zmq ``.key_secret`` file; a missing, foreign or public-only file is a UserError."""
    if not path.is_file():
        raise UserError(f"{flag}: {path} is not a file; give the {whose}'s .key_secret certificate")
    public, secret = public_certificate(path)
    if not secret:
        raise UserError(f"{path} holds only a public key; give the {whose}'s .key_secret file")
    return public, secret


def public_certificate(path: Path) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except (ValueError, OSError) as e:
        raise UserError(f"{path}: not a zmq certificate ({e})") from None
