"""Secrets: password hashing, API and session tokens, and comparing them.

- Passwords are hashed with Argon2id (argon2-cffi, the reference implementation's binding), so a stolen table
  costs an attacker memory-hard work per guess; hashes made with older parameters are rehashed on login.
- Tokens (API tokens, session cookies) are 256 random bits. They are stored as their SHA-256: a token cannot be
  guessed, so a slow hash would only make every request slower without protecting anything.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

TOKEN_PREFIX = "sprout_"
_hasher = PasswordHasher()
# Verified when a user does not exist, so a login takes as long for an unknown name as for a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; always does the work of one verification (see _DUMMY_HASH)."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def new_token() -> str:
    """An API token as shown once to its owner: recognisable by its prefix (secret scanners look for those)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_secret() -> str:
    """A random value for a session cookie or a CSRF token."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def generate_password() -> str:
    """A password for a new account, printed once: 20 URL-safe characters (about 120 bits)."""
    return secrets.token_urlsafe(15)
