"""HMAC-SHA256 signatures for bytes that are trusted when loaded.

Registry model files and checkpoints are pickles (loading one can run code), and control
commands change what every worker serves. A SHA-256 checksum proves that bytes were not
damaged; only a keyed signature proves they were written by someone holding the key.
The key comes from the environment (never from a config file that may be committed):

- ``STREAMHEAL_REGISTRY_KEY`` signs registry model files,
- ``STREAMHEAL_CONTROL_KEY`` signs control commands,
- ``STREAMHEAL_STATE_KEY`` signs checkpoints.

When the variable is unset, nothing is signed and nothing is checked (documented in the
README). When it is set, unsigned or badly signed bytes are refused.

>>> signer = Signer(b"k")
>>> signature = signer.sign(b"payload")
>>> signer.verify(b"payload", signature)
True
>>> signer.verify(b"payload!", signature)
False
>>> Signer.from_env("STREAMHEAL_NO_SUCH_KEY", env={}) is None
True
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

REGISTRY_KEY_ENV = "STREAMHEAL_REGISTRY_KEY"
CONTROL_KEY_ENV = "STREAMHEAL_CONTROL_KEY"
STATE_KEY_ENV = "STREAMHEAL_STATE_KEY"


class Signer:
    """Signs and verifies bytes with one secret key (hex digests, constant-time compare)."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("a signing key must not be empty")
        self._key = key

    @classmethod
    def from_env(cls, variable: str, env: Mapping[str, str] | None = None) -> Signer | None:
        """A signer keyed by the environment variable, or None when it is unset or empty."""
        value = (os.environ if env is None else env).get(variable, "")
        return cls(value.encode()) if value else None

    def sign(self, payload: bytes) -> str:
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest()

    def verify(self, payload: bytes, signature: str | bytes | None) -> bool:
        """True when ``signature`` is ours for ``payload``; False for anything else (never
        raises, whatever a hostile record put in the signature field)."""
        if isinstance(signature, str):
            signature = signature.encode("utf-8", "surrogatepass")
        if not isinstance(signature, bytes):
            return False
        return hmac.compare_digest(self.sign(payload).encode(), signature)

    def __repr__(self) -> str:  # never show the key
        return "Signer(<key hidden>)"
