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


def client_certificates(folder: Path) -> int:
    """How many client certificates the allow-list holds, each read here first: pyzmq's authenticator only
    logs a file it cannot read, and then refuses every client, the good ones too."""
    if not folder.is_dir():
        raise UserError(f"CURVE clients folder not found: {folder}")
    files = sorted(folder.glob("*.key"))
    if not files:
        raise UserError(f"{folder} holds no client certificate (*.key): every client would be refused")
    for path in files:
        public_certificate(path)  # a file with no public key in it is refused here, by zmq's own reader
    return len(files)


def readable_by_others(path: Path) -> bool:
    """A secret key others on the box can read is no secret (zmq.auth.create_certificates writes mode 644)."""
    return bool(path.stat().st_mode & 0o077)


def public_certificate(path: Path) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except (ValueError, OSError) as e:
        raise UserError(f"{path}: not a zmq certificate ({e})") from None
