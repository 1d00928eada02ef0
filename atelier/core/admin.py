"""django-q2's admin is for superusers only: a Schedule's `func` runs any dotted path."""

from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest
from django_q import admin as q_admin
from django_q import models as q_models


class SuperuserOnlyMixin:
    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)


_REGISTRY = [
    (q_models.Schedule, q_admin.ScheduleAdmin),
    (q_models.Success, q_admin.TaskAdmin),
    (q_models.Failure, q_admin.FailAdmin),
    (q_models.OrmQ, q_admin.QueueAdmin),
]
for model, base_admin in _REGISTRY:
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, type(f"SuperuserOnly{base_admin.__name__}", (SuperuserOnlyMixin, base_admin), {}))
