"""The agent-side key file: the host key and every agent connection (spec §4.1, §10.7).

The file is the ``agentauth-agent`` state file (JSON, mode 0600, replaced atomically). With a
passphrase it is sealed instead: AES-256-GCM under a key stretched from the passphrase with
scrypt, so a copied file is useless without it. The passphrase comes from the environment
(:data:`PASSPHRASE_ENV`), never from the command line, where other users could read it.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

PASSPHRASE_ENV = "AGENTAUTH_AGENT_PASSPHRASE"
SEALED_FORMAT = "agentauth-agent-sealed-v1"
#: scrypt cost: about 32 MiB and a tenth of a second per unlock.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1


class KeyStoreError(ValueError):
    """The file cannot be read as a key store (wrong passphrase, sealed without one...)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise KeyStoreError("sealed key file is malformed")
    return base64.b64decode(value, validate=True)


class KeyStore:
    def __init__(self, path: Path, passphrase: str | None = None) -> None:
        self.path = path
        self.passphrase = passphrase or None
        self._salt: bytes | None = None
        self._key: bytes | None = None

    @classmethod
    def from_env(cls, path: Path) -> KeyStore:
        return cls(path, os.environ.get(PASSPHRASE_ENV))

    def _derive(self, salt: bytes) -> bytes:
        if self._key is None or self._salt != salt:
            assert self.passphrase is not None
            kdf = Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
            self._key, self._salt = kdf.derive(self.passphrase.encode("utf-8")), salt
        return self._key

    def load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"host": None, "agents": {}}
        stored = json.loads(self.path.read_text())
        if not isinstance(stored, dict):
            raise KeyStoreError(f"{self.path} is not an agentauth-agent key file")
        if stored.get("format") == SEALED_FORMAT:
            stored = self._open(stored)
        elif self.passphrase is not None:
            raise KeyStoreError(f"{self.path} is not sealed; refusing to use it with a passphrase")
        stored.setdefault("host", None)
        stored.setdefault("agents", {})
        return stored

    def _open(self, sealed: dict[str, Any]) -> dict[str, Any]:
        if self.passphrase is None:
            raise KeyStoreError(f"{self.path} is sealed; set {PASSPHRASE_ENV}")
        key = self._derive(_unb64(sealed.get("salt")))
        try:
            plain = AESGCM(key).decrypt(
                _unb64(sealed.get("nonce")),
                _unb64(sealed.get("ciphertext")),
                SEALED_FORMAT.encode(),
            )
        except InvalidTag:
            raise KeyStoreError(f"cannot open {self.path}: wrong passphrase") from None
        state = json.loads(plain)
        if not isinstance(state, dict):
            raise KeyStoreError("sealed key file is malformed")
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Write atomically with mode 0600, even if an older copy had looser permissions."""
        text = json.dumps(state, indent=2)
        if self.passphrase is not None:
            salt = self._salt or os.urandom(16)
            nonce = os.urandom(12)
            ciphertext = AESGCM(self._derive(salt)).encrypt(
                nonce, text.encode("utf-8"), SEALED_FORMAT.encode()
            )
            text = json.dumps(
                {
                    "format": SEALED_FORMAT,
                    "kdf": {"name": "scrypt", "n": _SCRYPT_N, "r": _SCRYPT_R, "p": _SCRYPT_P},
                    "salt": _b64(salt),
                    "nonce": _b64(nonce),
                    "ciphertext": _b64(ciphertext),
                }
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
