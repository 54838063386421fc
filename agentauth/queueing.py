"""Handing work to Celery without a 500 when the broker is down.

An unreachable broker is a passing outage, so the client gets ``503 temporarily_unavailable``
with ``Retry-After`` (spec §5.13) rather than an ``internal_error``. The broker is tried inside
the transaction that creates the work: when it cannot be reached, the transaction rolls back and
nothing half-done is stored (no agent that exists but whose person is never notified), so the
client sends the same request again after ``Retry-After`` and it succeeds. Only if the broker
drops between that probe and the commit is the work kept without its message; the client is
still told 503, and the request can be re-opened (``request-capability``).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from .errors import ProtocolError

logger = logging.getLogger("agentauth")

#: Seconds a client waits before sending the request again.
RETRY_AFTER = 30


def unavailable() -> ProtocolError:
    return ProtocolError(
        "temporarily_unavailable",
        "The task queue cannot be reached; send the same request again later",
        headers={"Retry-After": str(RETRY_AFTER)},
    )


def ensure_reachable(app: Any) -> None:
    """Raise 503 unless the Celery ``app`` can queue now (always true when tasks run eagerly)."""
    if app.conf.task_always_eager:
        return
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
    except Exception:
        logger.warning("agentauth: Celery broker unreachable; answering 503", exc_info=True)
        raise unavailable() from None


def enqueue_on_commit(call: Any) -> None:
    """Queue the Celery signature ``call`` once the current transaction commits, the broker
    checked first."""
    ensure_reachable(call.app)

    def send() -> None:
        try:
            call.delay()
        except Exception:
            logger.exception("agentauth: could not queue %r after commit", call)
            raise unavailable() from None

    transaction.on_commit(send)
