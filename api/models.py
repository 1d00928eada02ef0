"""The public API's own tables: personal API keys and stored idempotent responses.

Its own app (not accounts) because both tables exist only for /api/v1 and are written only by
api.services; the rest of the code base never needs them.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ApiKey(models.Model):
    """A personal API key. Only the SHA-256 of the full key is stored (api.services explains why that
    is enough for a 256-bit random secret); ``prefix`` is the non-secret start shown in lists."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=80)
    prefix = models.CharField(max_length=16, unique=True, help_text="The key's visible start, e.g. atl_3kd9x2pq.")
    secret_hash = models.CharField(max_length=64, help_text="SHA-256 (hex) of the whole key.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class IdempotencyRecord(models.Model):
    """The first response to a POST sent with an ``Idempotency-Key`` header, replayed for retries.

    Unique per (owner, key): two users may use the same key. ``request_hash`` is the SHA-256 of the
    method, path and body; the same key with another request is refused (422)."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True, help_text="Empty while in progress.")
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="unique_idempotency_key")]

    def __str__(self) -> str:
        return f"{self.key} → {self.status_code}"
