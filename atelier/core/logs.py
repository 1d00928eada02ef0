"""Structured logs with the standard library: context bound through requests and the engine, secrets redacted.

Why the standard library and not structlog / django-structlog (docs/operations.md, "Logs"): every module
already logs through `logging.getLogger(__name__)`, and so do Django, daphne, django-q2 and the SDKs; a
filter and two formatters give all of them the same fields with no second logging API to learn and no new
dependency. The context lives in `contextvars`, which asyncio tasks copy when they are created and
asgiref's sync_to_async carries into its threads, so a value bound by the request middleware or by the
engine reaches every record logged below it, in threads and in each parallel call's task.

Fields on every record: request_id, user_id, session_id, turn_id ("-" when unbound).
Formats: LOG_FORMAT=json (one JSON object per line; the production default) or plain (readable; the
development default). Every formatted line goes through `redact`: configured secret values (SECRET_KEY,
provider keys, Stripe keys, the e-mail password, METRICS_TOKEN, passwords in DATABASE_URL / REDIS_URL) and
strings shaped like API keys become "[redacted]", and a message is cut at MAX_MESSAGE_CHARS so a stray
document can never fill the logs. Document text is never logged on purpose (tests/core/test_observability.py).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

FIELDS = ("request_id", "user_id", "session_id", "turn_id")
MAX_MESSAGE_CHARS = 2000
REDACTED = "[redacted]"

_context: dict[str, contextvars.ContextVar[Any]] = {
    name: contextvars.ContextVar(f"atelier_log_{name}", default=None) for name in FIELDS
}

# Shapes of keys that must never reach a log even when nobody configured them here (a user pasting one).
_KEY_SHAPES = re.compile(
    r"\b(?:sk-ant-[A-Za-z0-9_-]{16,}|sk-(?:proj-)?[A-Za-z0-9_-]{20,}|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|whsec_[A-Za-z0-9]{16,}|xai-[A-Za-z0-9]{20,}|AIza[A-Za-z0-9_-]{30,})"
)
_secrets_cache: tuple[str, ...] | None = None


def bind(**values: Any) -> None:
    """Bind fields for everything logged later in this context (this task or thread, and what it starts)."""
    for name, value in values.items():
        _context[name].set(value)


@contextlib.contextmanager
def bound(**values: Any) -> Iterator[None]:
    """Bind fields for the duration of a `with` block, then restore what was bound before."""
    tokens = [(_context[name], _context[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current() -> dict[str, Any]:
    """The bound fields now ({name: value or None})."""
    return {name: var.get() for name, var in _context.items()}


def _configured_secrets() -> tuple[str, ...]:
    global _secrets_cache
    if _secrets_cache is None:
        from django.conf import settings

        values = [getattr(settings, "SECRET_KEY", ""), getattr(settings, "METRICS_TOKEN", "")]
        values += [getattr(settings, name, "") for name in ("STRIPE_LIVE_SECRET_KEY", "STRIPE_TEST_SECRET_KEY")]
        values.append(getattr(settings, "EMAIL_HOST_PASSWORD", ""))
        values += [(p or {}).get("api_key", "") for p in (getattr(settings, "PROVIDERS", {}) or {}).values()]
        for url in (getattr(settings, "DATABASE_URL", ""), getattr(settings, "REDIS_URL", "")):
            with contextlib.suppress(ValueError):
                values.append(urlsplit(url).password or "")
        # Short values would redact ordinary words; the placeholder test key is not a secret.
        _secrets_cache = tuple(sorted({v for v in values if v and len(v) >= 8}, key=len, reverse=True))
    return _secrets_cache


def reset_secrets_cache() -> None:
    """Forget the configured secrets (tests that change settings)."""
    global _secrets_cache
    _secrets_cache = None


def redact(text: str) -> str:
    """`text` with configured secrets and key-shaped strings replaced by "[redacted]"."""
    for secret in _configured_secrets():
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _KEY_SHAPES.sub(REDACTED, text)


class ContextFilter(logging.Filter):
    """Adds the bound fields to every record (handlers' filter, so records of every logger get them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _context.items():
            if not hasattr(record, name):
                value = var.get()
                setattr(record, name, "-" if value is None else value)
        return True


def _message(record: logging.LogRecord) -> str:
    message = record.getMessage()
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + f"… [{len(message) - MAX_MESSAGE_CHARS} more characters cut]"
    return message


class PlainFormatter(logging.Formatter):
    """Readable lines for development: time, level, logger, the bound fields that are set, the message."""

    def format(self, record: logging.LogRecord) -> str:
        bound_fields = " ".join(
            f"{name}={getattr(record, name)}" for name in FIELDS if getattr(record, name, "-") not in ("-", None)
        )
        stamp = self.formatTime(record, "%H:%M:%S")
        line = f"{stamp} {record.levelname} {record.name}: {_message(record)}"
        if bound_fields:
            line += f" [{bound_fields}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line for production: ts, level, logger, message, the bound fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        for name in FIELDS:
            value = getattr(record, name, "-")
            entry[name] = None if value == "-" else value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False, default=str))


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_id_for(header: str | None) -> str:
    """The proxy's X-Request-ID when it is a sane token, else a new random id (32 hex characters)."""
    import uuid

    if header and _REQUEST_ID.match(header):
        return header
    return uuid.uuid4().hex
