"""The encryption keys (settings.FERNET_KEYS) as a keyring that knows each key's id.

django-fernet-fields-v2 caches its keys on each field for the life of the process and records
no key id in a token. The keyring is rebuilt whenever FERNET_KEYS changes and gives every key a
short id (a hash of the derived key, safe to store and show), so rows can record which key
encrypted them and rotation can find the rows still on an old key. Keys are derived with the
library's own HKDF, so its tokens and ours are interchangeable.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from fernet_fields import hkdf


@dataclass(frozen=True)
class Keyring:
    """The configured keys, primary first, each with its id."""

    fernets: tuple[Fernet, ...]
    ids: tuple[str, ...]

    @property
    def primary_id(self) -> str:
        return self.ids[0]

    def encrypt(self, data: bytes) -> bytes:
        """Encrypt with the primary key."""
        return self.fernets[0].encrypt(data)

    def decrypt(self, token: bytes) -> tuple[bytes, str]:
        """Plaintext and the id of the key that opened it; InvalidToken if none does."""
        for fernet, key_id in zip(self.fernets, self.ids):
            try:
                return fernet.decrypt(token), key_id
            except InvalidToken:
                continue
        raise InvalidToken

    @property
    def multi(self) -> MultiFernet:
        return MultiFernet(list(self.fernets))


def key_id(derived_key: bytes) -> str:
    """A stable, non-reversible id for a derived Fernet key."""
    return hashlib.sha256(b"llmconn-fernet-key-id:" + derived_key).hexdigest()[:12]


@functools.lru_cache(maxsize=8)
def _build(keys: tuple[str, ...], use_hkdf: bool) -> Keyring:
    derived = [hkdf.derive_fernet_key(k) if use_hkdf else k.encode() for k in keys]
    return Keyring(tuple(Fernet(k) for k in derived), tuple(key_id(k) for k in derived))


def keyring() -> Keyring:
    """The keyring for the current settings (cheap: cached per distinct key list)."""
    keys = tuple(settings.FERNET_KEYS)
    if not keys:
        raise RuntimeError("FERNET_KEYS is empty")
    return _build(keys, getattr(settings, "FERNET_USE_HKDF", True))
