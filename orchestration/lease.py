"""The per-session executor lease: one worker drives a session at a time, and only that worker writes.

A lease is (lease_owner, lease_expires_at) on the session row. The executor renews it every
RENEW_INTERVAL seconds with one `UPDATE … RETURNING status` (which also tells it about a Stop),
and every engine write is *fenced*: its transaction starts with that same conditional UPDATE, so
a worker that lost its lease (frozen, partitioned, too slow) finds out before writing anything
and stands down (raises LeaseLost) instead of changing the status, saving or charging a turn.

On PostgreSQL the fencing UPDATE takes the session's row lock, so a concurrent claim waits and
then sees a live lease; on SQLite it takes the database write lock. Either way a claim and a
fenced write never interleave.

Owners look like "<host>~<pid namespace>:<pid>:<random>". The watchdog hands a session to the queue by setting
the owner to "dispatch:<time>" (claimable by any executor), so it does not enqueue it again
while the task waits for a worker.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from atelier.core.sql import update_row
from orchestration.models import ACTIVE_STATUSES, WritingSession

DISPATCH_PREFIX = "dispatch:"
# How often a driving executor renews its lease (and looks for Stop). Stop is noticed within this.
RENEW_INTERVAL = 0.5


class LeaseLost(Exception):
    """Another executor holds this session's lease now: stand down without writing anything."""


def _machine() -> str:
    """This machine *and* pid namespace: containers can share a hostname but never see each other's pids.

    ENGINE_MACHINE_ID overrides it (e.g. a pod name); the crash benchmark uses it to play two machines.
    """
    if settings.ENGINE_MACHINE_ID:
        return settings.ENGINE_MACHINE_ID[:40]
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()[:32]}~{namespace}"


def new_owner_id() -> str:
    """<machine>:<pid>:<random> (at most 64 characters, the column's size)."""
    return f"{_machine()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _expiry(seconds: float | None = None) -> datetime:
    return timezone.now() + timedelta(seconds=settings.ENGINE_LEASE_SECONDS if seconds is None else seconds)


def claim_lease(session_id: int, owner: str) -> bool:
    """Take the lease if the session is drivable and nobody live holds it. True if now ours."""
    return claim_lease_for_flow(session_id, owner) is not None


def claim_lease_for_flow(session_id: int, owner: str) -> str | None:
    """claim_lease in one UPDATE … RETURNING that also says which flow drives the session: its flow
    (models.Flow) if the lease is now ours, else None.

    A drivable session (ACTIVE_STATUSES) is claimable when its lease is unset, expired, already this owner's,
    or a queue hand-over marker (DISPATCH_PREFIX, lease.mark_dispatched). The session host's hand-over sends
    this one statement where it sent a read of the flow and the claim (issue 15: every statement of the
    hand-over waits for the GIL of a worker process busy driving the other sessions).
    """
    quote = connection.ops.quote_name
    statuses = sorted(ACTIVE_STATUSES)
    sql = (
        f"UPDATE {quote(WritingSession._meta.db_table)} SET lease_owner = %s, lease_expires_at = %s "  # noqa: S608 - no user input
        f"WHERE id = %s AND status IN ({', '.join(['%s'] * len(statuses))}) AND (lease_expires_at IS NULL "
        "OR lease_expires_at < %s OR lease_owner = %s OR lease_owner LIKE %s) RETURNING flow"
    )
    adapt = connection.ops.adapt_datetimefield_value
    params = [owner, adapt(_expiry()), session_id, *statuses, adapt(timezone.now()), owner, f"{DISPATCH_PREFIX}%"]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else str(row[0])


def renew_lease(session_id: int, owner: str) -> str | None:
    """Extend the lease in one statement. Returns the session's status, or None if the lease is not ours.

    Runs every RENEW_INTERVAL seconds while a step streams (issue 15: one UPDATE … RETURNING), and
    as the first statement of every fenced write (see fence()).
    """
    row = update_row(
        WritingSession,
        where={"id": session_id, "lease_owner": owner},
        set_fields={"lease_expires_at": _expiry()},
        returning=("status",),
    )
    return None if row is None else str(row["status"])


# Sessions per renewal statement: three parameters each, within SQLite's oldest limit of 999.
RENEW_BATCH = 300


def renew_leases(leases: dict[int, str]) -> dict[int, str]:
    """Extend many leases at once: {session id: owner} -> {session id: status} for the leases still held.

    The session host's renewal tick (orchestration/host.py): one `UPDATE … WHERE id IN (…) AND lease_owner =
    CASE id … END RETURNING id, status` per RENEW_BATCH sessions, where renew_lease would send one statement
    per session. A session missing from the result is no longer this owner's (another executor took it over).
    """
    table = connection.ops.quote_name(WritingSession._meta.db_table)
    expires = connection.ops.adapt_datetimefield_value(_expiry())
    held: dict[int, str] = {}
    items = sorted(leases.items())  # one lock order for every batch (PostgreSQL takes the rows' locks)
    for start in range(0, len(items), RENEW_BATCH):
        batch = items[start : start + RENEW_BATCH]
        ids = ", ".join(["%s"] * len(batch))
        cases = " ".join(["WHEN %s THEN %s"] * len(batch))
        sql = (
            f"UPDATE {table} SET lease_expires_at = %s WHERE id IN ({ids}) "  # noqa: S608 - no user input
            f"AND lease_owner = CASE id {cases} END RETURNING id, status"
        )
        params: list[Any] = [expires, *(pk for pk, _ in batch), *(value for pair in batch for value in pair)]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            held.update((int(pk), str(status)) for pk, status in cursor.fetchall())
    return held


def fence(session_id: int, owner: str) -> str:
    """Call first inside a write transaction: renews the lease or raises LeaseLost. Returns the status."""
    status = renew_lease(session_id, owner)
    if status is None:
        raise LeaseLost(f"session {session_id}: lease no longer held by {owner}")
    return status


def fenced_update(
    session_id: int,
    owner: str,
    *,
    seqs: int = 0,
    set_fields: dict[str, Any] | None = None,
    add_fields: dict[str, Any] | None = None,
    returning: tuple[str, ...] = (),
) -> dict[str, Any]:
    """fence() folded with the step's other writes to the session row: one UPDATE … RETURNING.

    Renews the lease, reserves `seqs` event sequence numbers, sets `set_fields` and adds `add_fields`
    (column name -> value / increment; names are the engine's own, never user input). Returns
    {"last_seq", "status", *returning} as updated. Raises LeaseLost if `owner` no longer holds the lease.
    Raw SQL (atelier.core.sql.update_row): the ORM cannot return updated values (Django 5.2), and this is the
    engine's hottest statement. Raises ValueError for a name that is not a session field.
    """
    row = update_row(
        WritingSession,
        where={"id": session_id, "lease_owner": owner},
        set_fields={"lease_expires_at": _expiry(), **(set_fields or {})},
        add_fields={"last_seq": seqs, **(add_fields or {})},
        returning=("last_seq", "status", *returning),
    )
    if row is None:
        raise LeaseLost(f"session {session_id}: lease no longer held by {owner}")
    return row


def fenced_transition(session_id: int, owner: str, *, status_was: str, status: str, seqs: int = 0) -> int | None:
    """fenced_update as a compare-and-swap of the status: one UPDATE renews the lease, moves the status from
    `status_was` to `status` (stamping updated_at) and reserves `seqs` event numbers.

    Returns the last reserved sequence number, or None (nothing written) when the status was no longer
    `status_was`. Raises LeaseLost if `owner` no longer holds the lease. The caller checks the transition is
    allowed (models.ALLOWED_TRANSITIONS), as services.set_status does.
    """
    row = update_row(
        WritingSession,
        where={"id": session_id, "lease_owner": owner, "status": status_was},
        set_fields={"lease_expires_at": _expiry(), "status": status, "updated_at": timezone.now()},
        add_fields={"last_seq": seqs},
        returning=("last_seq",),
    )
    if row is None:
        fence(session_id, owner)  # raises LeaseLost if that is why nothing matched
        return None
    return int(row["last_seq"])


def release_lease(session_id: int, owner: str) -> bool:
    """Give the lease up if it is still ours. True if it was."""
    return (
        WritingSession.objects.filter(pk=session_id, lease_owner=owner).update(lease_owner="", lease_expires_at=None)
        == 1
    )


def mark_dispatched(
    session_id: int, *, seen_owner: str, seen_expires_at: datetime | None, dispatch_seconds: float
) -> bool:
    """Hand a stale session to the queue, once: True if this caller won it and must enqueue a drive.

    The update is conditional on the lease being exactly as the caller saw it, so two watchdogs
    (or a watchdog and a reviving executor) never both act. The dispatch marker lasts
    `dispatch_seconds`: if the task is lost or waits behind busy workers, the watchdog tries again then.
    """
    marker = f"{DISPATCH_PREFIX}{timezone.now().timestamp():.0f}"
    return (
        WritingSession.objects.filter(
            pk=session_id, status__in=ACTIVE_STATUSES, lease_owner=seen_owner, lease_expires_at=seen_expires_at
        ).update(lease_owner=marker, lease_expires_at=_expiry(dispatch_seconds))
        == 1
    )


def owner_is_dead_here(owner: str) -> bool:
    """True if the owner is a process on this machine that no longer exists (a crashed worker).

    Lets the watchdog take over at once instead of waiting for the lease to run out. A pid reused
    by another process only makes us wait for the lease; a wrong "dead" would at worst start a
    second executor, and the fenced writes make the first one stand down.
    """
    machine, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if machine != _machine() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed process nobody has reaped yet (a zombie) is dead too
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


# Renewals come every RENEW_INTERVAL; this long without one means the executor is gone (or frozen).
SILENT_AFTER_SECONDS = 3.0


def executor_state(session_id: int) -> str:
    """Is a worker driving this session right now? One query, for the live page.

    "live": an executor renewed the lease within SILENT_AFTER_SECONDS; "lost": the session is active
    but nobody is renewing (a worker died or froze, or the session waits in the queue for a free
    worker); "idle": the session is not active. Compares the worker's clock with ours: a skew of a
    few seconds between machines would show "lost" early, which the page only uses as a hint.
    """
    row = WritingSession.objects.filter(pk=session_id).values_list("status", "lease_owner", "lease_expires_at").first()
    if row is None or row[0] not in ACTIVE_STATUSES:
        return "idle"
    _, owner, expires_at = row
    if not owner or owner.startswith(DISPATCH_PREFIX) or expires_at is None:
        return "lost"
    fresh_until = expires_at - timedelta(seconds=settings.ENGINE_LEASE_SECONDS - SILENT_AFTER_SECONDS)
    return "live" if fresh_until > timezone.now() else "lost"
