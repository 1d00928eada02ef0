"""allauth adapter: what Atelier changes in allauth's account flows."""

from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.models import EmailAddress
from allauth.core import context


class AccountAdapter(DefaultAccountAdapter):
    def send_account_already_exists_mail(self, email: str) -> None:
        """Signing up again with an address that has an account: allauth (preventing enumeration) sends an
        "you already have an account" mail. If that account never confirmed its address, the person is
        most likely retrying because the first link got lost, so send them a fresh confirmation link
        instead; the page they see ("we sent you a link") is then true. Verified accounts keep allauth's mail.
        """
        address = (
            EmailAddress.objects.filter(email__iexact=email, verified=False)
            .select_related("user")
            .order_by("-primary", "pk")
            .first()
        )
        if address is not None and not EmailAddress.objects.filter(user_id=address.user_id, verified=True).exists():
            address.send_confirmation(context.request, signup=True)
            return
        super().send_account_already_exists_mail(email)
