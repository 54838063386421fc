"""What the client remembers about one registered agent (spec §6.4: "stores the connection").

The agent's private key lives here and nowhere else; ``to_dict`` includes it so a CLI or host
application can persist the connection, which is why it must only be written to private storage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .identity import Keypair


@dataclass
class AgentConnection:
    """An agent registered through this client, with its last known status and grants."""

    agent_id: str
    host_id: str | None
    agent: Keypair
    status: str
    grants: list[dict[str, Any]] = field(default_factory=list)
    approval: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    issuer: str | None = None

    @property
    def active_capabilities(self) -> list[str]:
        """Names of grants the server last reported as ``active``."""
        return [
            str(g["capability"])
            for g in self.grants
            if isinstance(g, Mapping) and g.get("status") == "active" and "capability" in g
        ]

    def pending_capabilities(self, names: Iterable[str] | None = None) -> list[str]:
        wanted = None if names is None else set(names)
        return [
            str(g["capability"])
            for g in self.grants
            if isinstance(g, Mapping)
            and g.get("status") == "pending"
            and (wanted is None or g.get("capability") in wanted)
        ]

    def apply_status(self, body: Mapping[str, Any]) -> None:
        """Refresh from a status-shaped response (status, reactivate, revoke, register)."""
        if isinstance(body.get("status"), str):
            self.status = body["status"]
        if isinstance(body.get("host_id"), str):
            self.host_id = body["host_id"]
        grants = body.get("agent_capability_grants")
        if isinstance(grants, list):
            self.grants = [dict(g) for g in grants if isinstance(g, Mapping)]
        approval = body.get("approval")
        self.approval = dict(approval) if isinstance(approval, Mapping) else None

    def merge_grants(self, grants: Iterable[Any]) -> None:
        """Fold in the partial grant list a request-capability response returns (§5.4)."""
        by_name = {g.get("capability"): i for i, g in enumerate(self.grants)}
        for grant in grants:
            if not isinstance(grant, Mapping):
                continue
            index = by_name.get(grant.get("capability"))
            if index is None:
                by_name[grant.get("capability")] = len(self.grants)
                self.grants.append(dict(grant))
            else:
                self.grants[index] = dict(grant)

    def to_dict(self) -> dict[str, Any]:
        """Serializable form, private agent key included (store with owner-only permissions)."""
        return {
            "agent_id": self.agent_id,
            "host_id": self.host_id,
            "agent_key": self.agent.to_private_jwk(),
            "status": self.status,
            "grants": self.grants,
            "approval": self.approval,
            "issuer": self.issuer,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentConnection:
        return cls(
            agent_id=str(data["agent_id"]),
            host_id=data.get("host_id"),
            agent=Keypair.from_private_jwk(data["agent_key"]),
            status=str(data.get("status") or "unknown"),
            grants=list(data.get("grants") or []),
            approval=data.get("approval"),
            issuer=data.get("issuer"),
        )
