"""Ed25519 keys for gallery artefacts: the private key stays with the publisher, boxes hold the
public key (base64 of its 32 raw bytes) in `[fleet] public_key`."""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from agent.errors import ConfigError, FleetError, UntrustedArtefact

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )
except ImportError:
    raise FleetError(
        "signed galleries need the fleet extra: pip install 'edge-embedding-agent[fleet]'"
    ) from None


def generate(private_path: Path) -> str:
    """Write a new private key (PEM, mode 0600; never over an existing file); return the public
    key as `[fleet] public_key` takes it."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FleetError(f"{private_path} exists; a key is never overwritten") from None
    except OSError as exc:
        raise FleetError(f"cannot write {private_path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return public_text(key)


def public_text(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise FleetError(f"cannot read the signing key {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise FleetError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FleetError(f"{path} is not an Ed25519 key (`agent fleet keygen` makes one)")
    return key


def load_public(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise ConfigError(
            "fleet.public_key is not a base64 Ed25519 public key (32 bytes; `agent fleet keygen` "
            "prints one)"
        ) from None


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data)).decode()


def verify(key: Ed25519PublicKey, data: bytes, signature: str) -> None:
    """Raise FleetError unless `signature` is the fleet key's signature of `data`."""
    try:
        key.verify(base64.b64decode(signature, validate=True), data)
    except (InvalidSignature, binascii.Error, ValueError):
        raise UntrustedArtefact("signature does not match the fleet public key") from None
