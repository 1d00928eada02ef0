"""The users list of the operator console: plan, balance, sessions and last activity, with filters."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.db.models import Count, DateTimeField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce, Greatest
from django.http import HttpRequest
from django.utils import timezone

# Rows of AtelierUserAdmin.get_queryset: User objects annotated with _sessions and _last_activity.
AnnotatedUser = Any


class PlanFilter(admin.SimpleListFilter):
    title = "plan"
    parameter_name = "plan"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        from billing.plans import PLANS

        return [(key, plan.name) for key, plan in PLANS.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        from billing.plans import FREE

        if self.value() == FREE:  # no account yet means Free (it is created on first use)
            return queryset.exclude(credit_account__plan__in=[k for k, _ in self.lookup_choices if k != FREE])
        if self.value():
            return queryset.filter(credit_account__plan=self.value())
        return queryset


class ActivityFilter(admin.SimpleListFilter):
    title = "last activity"
    parameter_name = "active"
    PERIODS = {"7": 7, "30": 30}

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [
            ("7", "In the last 7 days"),
            ("30", "In the last 30 days"),
            ("stale", "Not in 30 days"),
            ("never", "Never"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value in self.PERIODS:
            return queryset.filter(_last_activity__gte=timezone.now() - dt.timedelta(days=self.PERIODS[value]))
        if value == "stale":
            return queryset.filter(_last_activity__lt=timezone.now() - dt.timedelta(days=30))
        if value == "never":
            return queryset.filter(_last_activity__isnull=True)
        return queryset


class HasSessionsFilter(admin.SimpleListFilter):
    title = "sessions"
    parameter_name = "sessions"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return [("yes", "Has sessions"), ("no", "No sessions")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(_sessions__gt=0)
        if self.value() == "no":
            return queryset.filter(_sessions=0)
        return queryset


class AtelierUserAdmin(UserAdmin[User]):
    list_display = ("email", "name", "plan", "balance", "session_count", "last_activity", "date_joined", "is_staff")
    list_filter = (PlanFilter, ActivityFilter, HasSessionsFilter, "is_staff", "is_superuser", "is_active")
    list_select_related = ("credit_account", "profile")
    search_fields = ("email", "username", "profile__display_name")
    ordering = ("-date_joined",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        from orchestration.models import WritingSession

        # Last activity: the latest of the last login and the last change to any of the user's sessions.
        last_session = (
            WritingSession.objects.filter(project__owner=OuterRef("pk"))
            .order_by("-updated_at")
            .values("updated_at")[:1]
        )
        sessions = (
            WritingSession.objects.filter(project__owner=OuterRef("pk"))
            .order_by()
            .values("project__owner")
            .annotate(n=Count("pk"))
            .values("n")
        )
        session_time = Subquery(last_session, output_field=DateTimeField())
        return (
            super()
            .get_queryset(request)
            .annotate(
                _sessions=Coalesce(Subquery(sessions), 0),
                _last_session=session_time,
            )
            .annotate(
                _last_activity=Greatest(
                    Coalesce("last_login", "_last_session"), Coalesce("_last_session", "last_login")
                ),
            )
        )

    @admin.display(description="Name")
    def name(self, obj: User) -> str:
        from accounts.services import display_name

        profile = getattr(obj, "profile", None)
        return (profile.display_name if profile and profile.display_name else "") or display_name(obj)

    @admin.display(description="Plan", ordering="credit_account__plan")
    def plan(self, obj: User) -> str:
        account = getattr(obj, "credit_account", None)
        return account.get_plan_display() if account else "Free (no account yet)"

    @admin.display(description="Balance", ordering="credit_account__balance")
    def balance(self, obj: User) -> int | str:
        account = getattr(obj, "credit_account", None)
        return account.balance if account else "—"

    @admin.display(description="Sessions", ordering="_sessions")
    def session_count(self, obj: AnnotatedUser) -> int:
        return int(obj._sessions)

    @admin.display(description="Last activity", ordering="_last_activity")
    def last_activity(self, obj: AnnotatedUser) -> dt.datetime | None:
        when: dt.datetime | None = obj._last_activity
        return when


if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, AtelierUserAdmin)
