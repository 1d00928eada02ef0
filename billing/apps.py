from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        import stripe
        from django.conf import settings
        from djstripe import signals

        from billing.webhooks import on_webhook_pre_process

        signals.webhook_pre_process.connect(on_webhook_pre_process, dispatch_uid="billing-webhooks")

        # Tests and local development point the stripe library at a local fake (no network).
        if getattr(settings, "STRIPE_API_BASE", ""):
            stripe.api_base = settings.STRIPE_API_BASE
