"""API key format and hashing.

A key is `pss_<id>_<secret>`: the id (a UUID in hex) finds the row, the 256-bit random secret is
checked against a salted SHA-256 with a constant-time comparison. A slow password hash (scrypt,
argon2) protects low-entropy passwords from offline guessing; a 256-bit random secret cannot be
guessed, so a fast salted hash gives the same protection without costing every request ~50 ms.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum

KEY_PREFIX = "pss"


class Scope(StrEnum):
    SCORES = "scores"
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


ALL_SCOPES = frozenset(Scope)


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: uuid.UUID
    token: str
    salt: str
    secret_hash: str


def hash_secret(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def generate_key() -> NewKey:
    key_id = uuid.uuid4()
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    return NewKey(key_id, f"{KEY_PREFIX}_{key_id.hex}_{secret}", salt, hash_secret(salt, secret))


def parse_token(token: str) -> tuple[uuid.UUID, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 32:
        return None
    try:
        return uuid.UUID(hex=parts[1]), parts[2]
    except ValueError:
        return None


def secret_matches(salt: str, secret: str, expected_hash: str) -> bool:
    try:
        candidate = hash_secret(salt, secret)
    except ValueError:
        return False
    return hmac.compare_digest(candidate, expected_hash)


def parse_scopes(text: str) -> frozenset[Scope]:
    return frozenset(Scope(s) for s in text.split() if s)
