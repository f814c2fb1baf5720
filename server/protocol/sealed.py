"""Reasoning a stateless client carries between turns, sealed (``include:
["reasoning.encrypted_content"]`` with ``store: false``, as Codex sends it).

The reasoning item's ``encrypted_content`` is the reasoning text under AES-GCM with a key only the
server holds, so a client can send it back in the next turn's input and the reasoning is restored,
but cannot read it or forge one: a token that does not open under the key is refused. The key
lives in the database (``Database.server_secret``), so every API process and every server sharing
the database opens what any of them sealed, across restarts.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

INCLUDE = "reasoning.encrypted_content"
_PREFIX = "hermes1."  # the format's version: a later one can open what this one sealed
_NONCE = 12


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, text: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, text.encode(), _PREFIX.encode())
        return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, token: str) -> str | None:
        """The text, or None when the token was not sealed with this key (or was altered)."""
        if not token.startswith(_PREFIX):
            return None
        try:
            raw = base64.urlsafe_b64decode(token[len(_PREFIX) :].encode())
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _PREFIX.encode()).decode()
        except (InvalidTag, ValueError):
            return None


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)
