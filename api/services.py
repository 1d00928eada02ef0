"""API keys: create (shown once), authenticate, revoke. Every write to ApiKey happens here.

Key format: ``atl_<8 lowercase letters/digits>_<43 url-safe characters>``. The first part
(``atl_…``, 12 characters) is the *prefix*: unique, stored in clear, shown in lists so a user can
tell keys apart, and used to find the row. The rest is ``secrets.token_urlsafe(32)``: 256 bits from
the OS's CSPRNG.

Why a plain SHA-256 and not a password hash (PBKDF2, Argon2): slow hashes exist to make guessing
*low-entropy* secrets expensive. A 256-bit random secret cannot be guessed whatever the hash
speed, so a stolen table of SHA-256 digests gives nothing usable, while a fast hash keeps
authentication at microseconds per request instead of ~100 ms of deliberate CPU (GitHub's and
Stripe's tokens are handled the same way). Comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from api.models import ApiKey

if TYPE_CHECKING:
    from django.contrib.auth.models import User

KEY_PREFIX = "atl_"
PREFIX_LENGTH = len(KEY_PREFIX) + 8
MAX_ACTIVE_KEYS = 25  # per user; revoke one to make another
# last_used_at is written at most this often per key: a burst of requests costs one UPDATE, not one each.
LAST_USED_RESOLUTION = timedelta(seconds=60)
_ALPHABET = string.ascii_lowercase + string.digits


class ApiKeyError(Exception):
    """A key could not be created or used; ``message`` is for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def hash_key(raw: str) -> str:
    """The stored form of a key: SHA-256 hex of the whole key (64 characters)."""
    return hashlib.sha256(raw.encode()).hexdigest()


@transaction.atomic
def create_api_key(*, owner: User, name: str) -> tuple[ApiKey, str]:
    """A new key for ``owner`` named ``name``; returns (row, the full key). The full key exists only
    in this return value: show it once. Raises ApiKeyError for an empty or over-long name or beyond
    MAX_ACTIVE_KEYS active keys."""
    from billing.services import hold_user_lock

    name = name.strip()
    if not name:
        raise ApiKeyError("Give the key a name, e.g. the script or machine that will use it.")
    limit = ApiKey._meta.get_field("name").max_length
    if limit is not None and len(name) > limit:
        raise ApiKeyError("Key names are at most 80 characters.")
    hold_user_lock(user=owner)  # concurrent creates count one after another
    if ApiKey.objects.filter(owner=owner, revoked_at__isnull=True).count() >= MAX_ACTIVE_KEYS:
        raise ApiKeyError(f"You have {MAX_ACTIVE_KEYS} active keys. Revoke one you no longer use first.")
    while True:
        prefix = KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(8))
        if not ApiKey.objects.filter(prefix=prefix).exists():
            break
    raw = f"{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(owner=owner, name=name, prefix=prefix, secret_hash=hash_key(raw))
    return key, raw


def revoke_api_key(*, key: ApiKey) -> bool:
    """Revoke ``key`` now (the caller has checked it is the user's own, or that staff revoke it).
    Returns False when it was already revoked. Requests with it get 401 from the next one on."""
    return bool(ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()))


def authenticate_key(raw: str) -> ApiKey:
    """The active key for the bearer token ``raw``, with its owner loaded; records its use (at most
    once per LAST_USED_RESOLUTION). Raises ApiKeyError for a malformed, unknown or revoked key, or
    an inactive owner."""
    raw = raw.strip()
    if not raw.startswith(KEY_PREFIX) or len(raw) < PREFIX_LENGTH + 2 or raw[PREFIX_LENGTH] != "_":
        raise ApiKeyError("Malformed API key. Keys start with “atl_”; copy the whole key.")
    key = ApiKey.objects.select_related("owner").filter(prefix=raw[:PREFIX_LENGTH]).first()
    if key is None or not hmac.compare_digest(key.secret_hash, hash_key(raw)):
        raise ApiKeyError("Unknown API key.")
    if key.revoked_at is not None:
        raise ApiKeyError("This API key was revoked. Create a new one in Settings → API keys.")
    if not key.owner.is_active:
        raise ApiKeyError("This API key's account is disabled.")
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key
