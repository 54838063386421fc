"""Agent-side client for the Agent Auth Protocol (spec §6).

Importable without Django: an agent process, a CLI or a test talking to a remote server needs
only ``cryptography`` and ``PyJWT``. The test-suite drives this package's server through it.
"""

from agentauth.errors import ProtocolError

from .client import AgentAuthClient
from .connection import AgentConnection
from .errors import ClientError
from .identity import Keypair
from .tokens import sign_agent_jwt, sign_host_jwt

__all__ = [
    "AgentAuthClient",
    "AgentConnection",
    "ClientError",
    "Keypair",
    "ProtocolError",
    "sign_agent_jwt",
    "sign_host_jwt",
]
