"""The operator console: Django's admin with Atelier's own index grouping and pages.

- dj-stripe registers ~40 models. Staff who are not superusers see them as one compact line at the end
  of the index ("Stripe records"), which opens dj-stripe's own page; superusers see everything as usual.
  (What those models show, e.g. masked secrets, is decided in their ModelAdmins, not here.)
- /admin/analytics/: sign-ups, activity, sessions, tokens, credits, provider cost and revenue
  (billing.analytics), for staff.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest
from django.urls import URLPattern, URLResolver, path, reverse

GROUPED_APPS = {"djstripe": "Stripe records"}


class AtelierAdminSite(admin.AdminSite):
    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[Any]:
        app_list = super().get_app_list(request, app_label)
        if app_label is not None:
            return app_list
        kept, grouped = [], []
        for app in app_list:
            if app["app_label"] in GROUPED_APPS and not request.user.is_superuser:
                count = len(app["models"])
                grouped.append(
                    {
                        **app,
                        "name": f"{GROUPED_APPS[app['app_label']]} ({count} tables, read by webhooks)",
                        "models": [],
                    }
                )
            else:
                kept.append(app)
        console = {
            "name": "Console",
            "app_label": "console",
            "app_url": reverse("admin:analytics"),
            "has_module_perms": True,
            "models": [
                {
                    "name": "Analytics",
                    "object_name": "Analytics",
                    "admin_url": reverse("admin:analytics"),
                    "add_url": None,
                    "view_only": True,
                    "perms": {"add": False, "change": False, "delete": False, "view": True},
                }
            ],
        }
        return [console, *kept, *grouped]

    def get_urls(self) -> list[URLPattern | URLResolver]:
        from billing.analytics import analytics_view

        return [path("analytics/", self.admin_view(analytics_view), name="analytics"), *super().get_urls()]


class AtelierAdminConfig(AdminConfig):
    default_site = "atelier.core.admin_site.AtelierAdminSite"
