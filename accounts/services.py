"""Profile and preferences. Other apps read preferences through these functions."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import User
from django.http import HttpRequest

from accounts.models import Profile

# The session caches (user id, time zone) so rendering a page needs no extra query for it.
SESSION_TZ_KEY = "atelier_tz"


def get_profile(user: User) -> Profile:
    """The user's profile, created with defaults on first access."""
    profile, _ = Profile.objects.get_or_create(user=user)
    return profile


def remember_time_zone(request: HttpRequest, *, user_id: int, time_zone: str) -> None:
    request.session[SESSION_TZ_KEY] = [user_id, time_zone]


def time_zone_for_request(request: HttpRequest) -> str:
    """The signed-in user's time zone: from the session, else one small query (then cached).
    "UTC" for an anonymous request (no profile)."""
    user_id = request.user.pk
    if user_id is None:
        return "UTC"
    cached = request.session.get(SESSION_TZ_KEY)
    # Keyed by user id: a session reused by someone else must not inherit the previous zone.
    if isinstance(cached, list) and len(cached) == 2 and cached[0] == user_id:
        return str(cached[1])
    time_zone = Profile.objects.filter(user_id=user_id).values_list("time_zone", flat=True).first() or "UTC"
    remember_time_zone(request, user_id=user_id, time_zone=time_zone)
    return time_zone


def display_name(user: AbstractBaseUser) -> str:
    """How Atelier names a person on its pages (human turns, staff actions): the display name they set,
    else the local part of their email address ("ada" for ada@example.com), never the username allauth
    generated. Falls back to the username only for accounts without an email (e.g. `createsuperuser`)."""
    profile = Profile.objects.filter(user_id=user.pk).values_list("display_name", flat=True).first()
    if profile:
        return profile
    email = getattr(user, "email", "") or ""
    local = email.split("@", 1)[0].strip()
    return local or user.get_username()
