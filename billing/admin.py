from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from atelier.core.http import AuthenticatedHttpRequest
from billing import services
from billing.models import CreditAccount, CreditEntry


class GrantCreditsForm(forms.Form):
    amount = forms.IntegerField(help_text="Positive to add credits, negative to take them (never below zero).")
    reason = forms.CharField(max_length=300)


@admin.register(CreditAccount)
class CreditAccountAdmin(admin.ModelAdmin[CreditAccount]):
    list_display = ["user", "plan", "plan_status", "balance", "pending_plan", "current_period_end", "updated_at"]
    list_filter = ["plan", "plan_status"]
    list_select_related = ["user"]
    search_fields = ["user__email", "stripe_customer_id", "stripe_subscription_id"]
    # Balances move only through the ledger (the grant action below); Stripe fields come from webhooks.
    readonly_fields = [
        "user",
        "balance",
        "plan",
        "plan_status",
        "grace_until",
        "pending_plan",
        "current_period_end",
        "stripe_customer_id",
        "stripe_subscription_id",
        "stripe_state_at",
        "created_at",
        "updated_at",
    ]
    actions = ["grant_credits"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Grant or adjust credits")
    def grant_credits(self, request: AuthenticatedHttpRequest, queryset: QuerySet[CreditAccount]) -> HttpResponse:
        if "apply" in request.POST:
            form = GrantCreditsForm(request.POST)
            if form.is_valid():
                done = failed = 0
                for account in queryset.select_related("user"):
                    try:
                        services.adjust_credits(
                            user=account.user,
                            amount=form.cleaned_data["amount"],
                            reason=form.cleaned_data["reason"],
                            staff_user=request.user,
                        )
                        done += 1
                    except services.InsufficientCredits:
                        failed += 1
                self.message_user(request, f"Adjusted {done} account(s).", messages.SUCCESS)
                if failed:
                    self.message_user(request, f"{failed} account(s) would go below zero: skipped.", messages.ERROR)
                return redirect(request.get_full_path())
        else:
            form = GrantCreditsForm()
        return render(
            request,
            "billing/admin_grant_credits.html",
            {**self.admin_site.each_context(request), "form": form, "accounts": queryset, "title": "Grant credits"},
        )


@admin.register(CreditEntry)
class CreditEntryAdmin(admin.ModelAdmin[CreditEntry]):
    """The ledger is append-only: visible, never editable."""

    list_display = ["created_at", "user", "kind", "amount", "balance_after", "usage", "idempotency_key", "session_id"]
    list_filter = ["kind", "created_at"]
    list_select_related = ["user"]
    search_fields = ["user__email", "idempotency_key", "description"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: CreditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: CreditEntry | None = None) -> bool:
        return False


# --- dj-stripe's admin: no secrets for staff, masked for superusers (issue 9, case 10) ---------------
#
# dj-stripe's StripeModelAdmin shows every model property as a read-only field, and StripeModel has
# `default_api_key`: the full Stripe secret key on the Customer, Event, Product, Subscription, Price,
# Invoice ... pages. Here every dj-stripe admin drops secret-bearing fields; superusers get a masked
# key instead, and the API key and webhook endpoint pages (where secrets are managed) are theirs alone.

_SECRET_FIELD_WORDS = ("api_key", "secret")
_SUPERUSER_ONLY_MODELS = {"apikey", "webhookendpoint", "webhookeventtrigger"}


def _is_secret_field(name: object) -> bool:
    return isinstance(name, str) and any(word in name.lower() for word in _SECRET_FIELD_WORDS)


def _is_superuser(request: HttpRequest) -> bool:
    return bool(request.user.is_active and request.user.is_superuser)


if TYPE_CHECKING:  # what the mixin is mixed into, for the type checker only
    _ModelAdminBase = admin.ModelAdmin[Any]
else:
    _ModelAdminBase = object


class StripeSecretsAdminMixin(_ModelAdminBase):
    """Mixed into every registered dj-stripe ModelAdmin by mask_djstripe_admin()."""

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        fields = [f for f in super().get_readonly_fields(request, obj) if not _is_secret_field(f)]
        if obj is not None and _is_superuser(request) and hasattr(type(obj), "default_api_key"):
            fields.append("masked_api_key")
        return fields

    def get_fields(self, request: HttpRequest, obj: Model | None = None) -> list[Any]:
        return [f for f in super().get_fields(request, obj) if not _is_secret_field(f) or f == "masked_api_key"]

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        return [f for f in super().get_list_display(request) if not _is_secret_field(f)]

    @admin.display(description="API key (masked)")
    def masked_api_key(self, obj: Any) -> str:  # a dj-stripe model (untyped)
        from djstripe.models.api import redact_api_key

        try:
            key = obj.default_api_key
        except Exception:  # noqa: BLE001 - no key configured: nothing to show
            return "—"
        return redact_api_key(key) if key else "—"

    def _secrets_page(self, request: HttpRequest) -> bool:
        return self.model._meta.model_name not in _SUPERUSER_ONLY_MODELS or _is_superuser(request)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._secrets_page(request) and super().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return self._secrets_page(request) and super().has_add_permission(request, *args)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._secrets_page(request) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._secrets_page(request) and super().has_delete_permission(request, obj)


def mask_djstripe_admin(site: admin.AdminSite = admin.site) -> int:
    """Re-register every dj-stripe ModelAdmin with StripeSecretsAdminMixin; returns how many."""
    count = 0
    for model, model_admin in list(site._registry.items()):
        if model._meta.app_label != "djstripe" or isinstance(model_admin, StripeSecretsAdminMixin):
            continue
        base = type(model_admin)
        site.unregister(model)
        site.register(model, type(f"Masked{base.__name__}", (StripeSecretsAdminMixin, base), {}))
        count += 1
    return count


mask_djstripe_admin()
