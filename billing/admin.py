from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.shortcuts import redirect, render

from billing import services
from billing.models import CreditAccount, CreditEntry


class GrantCreditsForm(forms.Form):
    amount = forms.IntegerField(help_text="Positive to add credits, negative to take them (never below zero).")
    reason = forms.CharField(max_length=300)


@admin.register(CreditAccount)
class CreditAccountAdmin(admin.ModelAdmin):
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

    def has_add_permission(self, request):
        return False

    @admin.action(description="Grant or adjust credits")
    def grant_credits(self, request, queryset):
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
class CreditEntryAdmin(admin.ModelAdmin):
    """The ledger is append-only: visible, never editable."""

    list_display = ["created_at", "user", "kind", "amount", "balance_after", "usage", "idempotency_key", "session_id"]
    list_filter = ["kind", "created_at"]
    list_select_related = ["user"]
    search_fields = ["user__email", "idempotency_key", "description"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
