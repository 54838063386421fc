"""Black-box conformance checker for any Agent Auth server (``agentauth-conformance URL``).

It speaks to the server only over HTTP, through the Django-free :mod:`agentauth.client`, so it
can judge our server and anyone else's by the same rules. Each check cites the spec section it
enforces and whether that section says MUST or SHOULD; a failed SHOULD is reported but does not
make a server non-conformant.
"""

from .model import CheckResult, Level, Outcome
from .runner import run

__all__ = ["CheckResult", "Level", "Outcome", "run"]
