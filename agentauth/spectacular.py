"""drf-spectacular support: views using ``AgentAuthentication`` get the agent-JWT bearer scheme
in the project's own schema, under the same name and wording as ``agentauth.openapi``.

Imported by ``AgentAuthConfig.ready`` only when drf-spectacular is installed, which is what
registers the extension; projects without it never import this module.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class AgentAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "agentauth.authentication.AgentAuthentication"
    name = "agentJwt"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        from .openapi import SECURITY_SCHEMES

        return dict(SECURITY_SCHEMES["agentJwt"])
