"""Ed25519 identities held by the client: one host keypair per client, one agent keypair per agent.

The spec (§4.1) keeps private keys with the client and never sends them to a server, so this is the
only place a private key exists. Thumbprints and public JWKs come from :mod:`agentauth.keys`, the
same code the server uses, so both sides always agree on what a host or agent identifier is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from agentauth.errors import ProtocolError
from agentauth.keys import (
    b64url_decode,
    b64url_encode,
    generate_private_key,
    public_jwk,
    thumbprint,
)


@dataclass(frozen=True, eq=False)
class Keypair:
    """An Ed25519 private key plus the identifiers the protocol derives from it.

    ``repr`` shows only the thumbprint so that logging a client or a connection can never print
    private key material.
    """

    private_key: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> Keypair:
        """A fresh keypair; the client makes a new agent key for every registration (§5.3)."""
        return cls(generate_private_key())

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def public_jwk(self) -> dict[str, str]:
        """The public key as the ``{"kty","crv","x"}`` JWK sent in JWT claims and request bodies."""
        return public_jwk(self.private_key)

    @property
    def wire_jwk(self) -> dict[str, str]:
        """The public JWK as sent to servers: with ``kid`` = thumbprint (RFC 7517 §4.5).

        Harmless to servers that ignore it (the thumbprint is computed over the required members
        only, RFC 7638), and needed by servers that find a host by the ``kid`` inside its key,
        as the TypeScript reference server does.
        """
        return {**self.public_jwk, "kid": self.thumbprint}

    @property
    def thumbprint(self) -> str:
        """RFC 7638 SHA-256 thumbprint: the host's ``iss`` and every JWT's ``kid`` (§4.2)."""
        return thumbprint(self.public_jwk)

    def private_bytes(self) -> bytes:
        return self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def to_private_jwk(self) -> dict[str, str]:
        """Private JWK (with ``d``) for local persistence only; never put this on the wire."""
        return {**self.public_jwk, "d": b64url_encode(self.private_bytes())}

    @classmethod
    def from_private_jwk(cls, jwk: Mapping[str, Any]) -> Keypair:
        """Load a key saved by :meth:`to_private_jwk`.

        When ``x`` is present it must match the key derived from ``d``: a state file whose two
        halves disagree is corrupt, and signing with it would produce JWTs that never verify.
        """
        if not isinstance(jwk, Mapping):
            raise ProtocolError("invalid_request", "private JWK must be an object")
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise ProtocolError(
                "unsupported_algorithm", "only OKP/Ed25519 private keys are supported"
            )
        d = jwk.get("d")
        try:
            if not isinstance(d, str):
                raise ValueError("missing 'd'")
            raw = b64url_decode(d)
        except ValueError:
            raise ProtocolError("invalid_request", "private JWK 'd' is not base64url") from None
        if len(raw) != 32:
            raise ProtocolError("invalid_request", "private JWK 'd' must encode 32 bytes")
        keypair = cls(Ed25519PrivateKey.from_private_bytes(raw))
        if "x" in jwk and jwk["x"] != keypair.public_jwk["x"]:
            raise ProtocolError("invalid_request", "private JWK 'x' does not match 'd'")
        return keypair

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Keypair):
            return NotImplemented
        return self.private_bytes() == other.private_bytes()

    def __hash__(self) -> int:
        return hash(self.thumbprint)

    def __repr__(self) -> str:
        return f"Keypair(thumbprint={self.thumbprint!r})"
