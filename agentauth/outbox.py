"""Work that must follow a commit: CIBA notifications (spec §7.2) and async jobs (§5.11).

The row is written in the same transaction as the request that caused it, so an accepted
request always has its follow-up on disk, whatever the broker does. After the commit the row is
handed to the broker (a doorbell, with short timeouts and no retries, so a down or hung broker
costs a request at most a second or two); what the broker refused or lost, the sweep hands out
again (``dispatch_due``). A worker first claims the row with a conditional ``UPDATE``, so a
message delivered twice runs once; a claim lapses after ``OUTBOX_LEASE_SECONDS``, so work whose
worker died is picked up again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from .conf import app_settings
from .models import Execution, ExecutionStatus, OutboxKind, OutboxMessage, OutboxState

logger = logging.getLogger("agentauth")

DELIVER_TASK = "agentauth.deliver"
OPEN_STATES = (OutboxState.PENDING, OutboxState.QUEUED, OutboxState.WORKING)

# Per process: after a refused publish, stop knocking for PUBLISH_PAUSE_SECONDS (monotonic).
_paused_until = 0.0


def enqueue(kind: str, ref: str) -> OutboxMessage:
    """Record the follow-up inside the caller's transaction; publish it once that commits."""
    message = OutboxMessage.objects.create(kind=kind, ref=ref)
    transaction.on_commit(lambda: publish([message.pk]), robust=True)
    return message


def publish(ids: list[int]) -> int:
    """Hand messages to the broker; return how many it took. Never raises: whatever is not
    handed over stays due in the table, and the sweep tries again."""
    global _paused_until
    handed = 0
    for pk in ids:
        if time.monotonic() < _paused_until:
            break
        try:
            from celery import signature  # the [celery] extra; without it rows wait, never lost

            signature(DELIVER_TASK, args=(pk,)).apply_async(retry=False)
        except Exception as exc:  # any broker failure: the row is the record, not the queue
            _paused_until = time.monotonic() + app_settings.PUBLISH_PAUSE_SECONDS
            logger.warning("agentauth: broker refused outbox message %s: %s", pk, exc)
            _note(pk, f"publish: {exc}")
            break
        handed += 1
        now = timezone.now()
        try:
            OutboxMessage.objects.filter(_handable(now), pk=pk).update(
                state=OutboxState.QUEUED,
                queued_at=now,
                next_attempt_at=now + timedelta(seconds=app_settings.OUTBOX_REQUEUE_SECONDS),
            )
        except Exception as exc:  # the database went away after the commit: the sweep resends
            logger.warning("agentauth: could not mark outbox message %s queued: %s", pk, exc)
    return handed


def _handable(now: datetime) -> Q:
    """Rows that may be (re)handed to the broker: not yet claimed, or whose claim lapsed."""
    return Q(state__in=(OutboxState.PENDING, OutboxState.QUEUED)) | Q(
        state=OutboxState.WORKING, next_attempt_at__lte=now
    )


def _note(pk: int, error: str) -> None:
    with contextlib.suppress(Exception):  # best effort; the row stays due either way
        OutboxMessage.objects.filter(pk=pk).update(last_error=error[:256])


def dispatch_due(now: datetime | None = None, limit: int = 500) -> int:
    """Hand out again what is due: never published, refused, lost by the broker, or claimed by
    a worker that died. Returns how many the broker took."""
    now = now or timezone.now()
    ids = list(
        OutboxMessage.objects.filter(state__in=OPEN_STATES, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    return publish(ids) if ids else 0


def deliver(pk: int) -> str:
    """Run one message if this worker wins the claim; ``"done"``, ``"retry"``, ``"failed"`` or
    ``"skipped"`` (someone else holds it, or it is finished)."""
    now = timezone.now()
    lease = now + timedelta(seconds=app_settings.OUTBOX_LEASE_SECONDS)
    claimed = OutboxMessage.objects.filter(_handable(now), pk=pk).update(
        state=OutboxState.WORKING, attempts=F("attempts") + 1, next_attempt_at=lease
    )
    if not claimed:
        return "skipped"
    message = OutboxMessage.objects.get(pk=pk)
    if message.attempts > app_settings.OUTBOX_MAX_ATTEMPTS:
        _give_up(message, now)
        return "failed"
    try:
        sent = _run(message)
    except Exception as exc:
        logger.warning("agentauth: outbox %s %s failed: %s", message.kind, message.ref, exc)
        backoff = min(300, 5 * 2 ** min(message.attempts, 8))
        OutboxMessage.objects.filter(pk=pk, state=OutboxState.WORKING).update(
            state=OutboxState.PENDING,
            next_attempt_at=timezone.now() + timedelta(seconds=backoff),
            last_error=str(exc)[:256],
        )
        return "retry"
    if sent is None:
        # A job someone else is running (a direct task): look again after the requeue delay.
        OutboxMessage.objects.filter(pk=pk, state=OutboxState.WORKING).update(
            state=OutboxState.QUEUED,
            next_attempt_at=timezone.now() + timedelta(seconds=app_settings.OUTBOX_REQUEUE_SECONDS),
        )
        return "skipped"
    OutboxMessage.objects.filter(pk=pk, state=OutboxState.WORKING).update(
        state=OutboxState.DONE, sent_at=timezone.now() if sent else None
    )
    return "done"


def _run(message: OutboxMessage) -> bool | None:
    """True: delivered; False: nothing to deliver any more; None: not finished yet."""
    if message.kind == OutboxKind.NOTIFICATION:
        from .notifications import notify

        return notify(message.ref)
    from .execution import run_job  # execution imports jobs, which imports this module

    run_job(message.ref)
    status = Execution.objects.filter(pk=message.ref).values_list("status", flat=True).first()
    if status in (ExecutionStatus.PENDING, ExecutionStatus.RUNNING):
        return None
    return True


def _give_up(message: OutboxMessage, now: datetime) -> None:
    logger.error("agentauth: giving up on outbox %s %s", message.kind, message.ref)
    with transaction.atomic():
        OutboxMessage.objects.filter(pk=message.pk).update(state=OutboxState.FAILED)
        if message.kind == OutboxKind.JOB:
            Execution.objects.filter(
                pk=message.ref, status__in=(ExecutionStatus.PENDING, ExecutionStatus.RUNNING)
            ).update(
                status=ExecutionStatus.FAILED,
                error={"error": "internal_error", "message": "The job could not be run"},
                finished_at=now,
                updated_at=now,
            )
