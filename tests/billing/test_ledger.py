from __future__ import annotations

import pytest

from billing import services
from billing.models import CreditEntry, EntryKind
from billing.plans import PLANS


def test_new_user_gets_free_credits_once_on_first_access(owner):
    assert services.get_balance(owner) == PLANS["free"].monthly_credits
    assert services.get_balance(owner) == PLANS["free"].monthly_credits
    assert services.grant_monthly_credits(user=owner) is False
    assert CreditEntry.objects.filter(user=owner, kind=EntryKind.GRANT).count() == 1


def test_reserve_holds_credits_and_settle_charges_actual_and_releases_rest(funded):
    services.reserve_credits(user=funded, amount=300, key="turn:1:reserve")
    assert services.get_balance(funded) == 700
    charged = services.settle_credits(user=funded, reservation_key="turn:1:reserve", actual=120, key="turn:1:settle")
    assert charged == 120
    assert services.get_balance(funded) == 880
    settlement = CreditEntry.objects.get(idempotency_key="turn:1:settle")
    assert settlement.turn_id == 1 and settlement.usage == 120


def test_retried_calls_are_no_ops(funded):
    for _ in range(3):
        services.reserve_credits(user=funded, amount=300, key="turn:2:reserve")
    assert services.get_balance(funded) == 700
    for _ in range(3):
        assert (
            services.settle_credits(user=funded, reservation_key="turn:2:reserve", actual=50, key="turn:2:settle") == 50
        )
    assert services.get_balance(funded) == 950
    assert CreditEntry.objects.filter(user=funded).exclude(kind=EntryKind.GRANT).count() == 2


def test_a_reservation_is_closed_only_once(funded):
    services.reserve_credits(user=funded, amount=100, key="r")
    services.settle_credits(user=funded, reservation_key="r", actual=40, key="s1")
    assert services.settle_credits(user=funded, reservation_key="r", actual=40, key="s2") == 40
    services.release_credits(user=funded, reservation_key="r", key="rel")
    assert services.get_balance(funded) == 960


def test_release_gives_everything_back(funded):
    services.reserve_credits(user=funded, amount=400, key="turn:3:reserve")
    services.release_credits(user=funded, reservation_key="turn:3:reserve", key="turn:3:release")
    services.release_credits(user=funded, reservation_key="turn:3:reserve", key="turn:3:release")
    assert services.get_balance(funded) == 1000


def test_reserving_more_than_the_balance_is_refused_and_holds_nothing(funded):
    with pytest.raises(services.InsufficientCredits) as excinfo:
        services.reserve_credits(user=funded, amount=1001, key="big")
    assert "Out of credits" in str(excinfo.value)
    assert services.get_balance(funded) == 1000
    assert not CreditEntry.objects.filter(idempotency_key="big").exists()


def test_usage_above_the_reservation_is_charged_only_up_to_the_balance(funded):
    services.reserve_credits(user=funded, amount=900, key="r")
    charged = services.settle_credits(user=funded, reservation_key="r", actual=1500, key="s", description="Turn 9")
    assert charged == 1000
    assert services.get_balance(funded) == 0
    assert "balance exhausted" in CreditEntry.objects.get(idempotency_key="s").description


def test_balance_never_goes_below_zero_even_by_staff_adjustment(funded, django_user_model):
    staff = django_user_model.objects.create_user(username="staff", is_staff=True)
    with pytest.raises(services.InsufficientCredits):
        services.adjust_credits(user=funded, amount=-1001, reason="typo", staff_user=staff)
    entry = services.adjust_credits(user=funded, amount=-1000, reason="refund chargeback", staff_user=staff)
    assert entry.balance_after == 0 and entry.created_by == staff


def test_reconcile_finds_and_repairs_drift(funded):
    from billing.models import CreditAccount

    CreditAccount.objects.filter(user=funded).update(balance=1234)
    assert [(d.cached, d.ledger) for d in services.find_drift()] == [(1234, 1000)]
    services.repair_drift(user_id=funded.pk)
    assert services.find_drift() == []
    assert services.get_balance(funded) == 1000
