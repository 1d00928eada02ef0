"""Many threads reserving and settling against one balance: never overdrawn, ledger == balance.

Runs on PostgreSQL (real row locks) and on SQLite (IMMEDIATE transactions serialize writers).
"""

from __future__ import annotations

import random
import threading

import pytest
from django.db import connection, connections
from django.db.models import Sum

from billing import services
from billing.models import CreditAccount, CreditEntry

THREADS = 8
CALLS_PER_THREAD = 15
START = 1000


def _run_threads(user) -> tuple[list[int], list[Exception]]:
    charged: list[int] = []
    errors: list[Exception] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def worker(n: int):
        rng = random.Random(n)
        barrier.wait()
        try:
            for i in range(CALLS_PER_THREAD):
                key = f"turn:{n * 1000 + i}"
                try:
                    services.reserve_credits(user=user, amount=rng.randint(5, 40), key=f"{key}:reserve")
                except services.InsufficientCredits:
                    continue
                # Sometimes usage exceeds the reservation: charged only up to what is there.
                actual = rng.randint(0, 60)
                got = services.settle_credits(
                    user=user, reservation_key=f"{key}:reserve", actual=actual, key=f"{key}:settle"
                )
                with lock:
                    charged.append(got)
        except Exception as error:  # noqa: BLE001 - surfaced in the assertion below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return charged, errors


@pytest.mark.django_db(transaction=True)
def test_concurrent_reserve_and_settle_never_overdraw(owner):
    services.get_account(owner)
    services.grant_credits(user=owner, amount=START - services.get_balance(owner), key="test:start")
    charged, errors = _run_threads(owner)
    assert errors == []
    account = CreditAccount.objects.get(user=owner)
    ledger = CreditEntry.objects.filter(user=owner).aggregate(total=Sum("amount"))["total"]
    assert account.balance >= 0
    assert account.balance == ledger
    assert account.balance == START - sum(charged)
    assert not CreditEntry.objects.filter(balance_after__lt=0).exists()
    assert services.find_drift() == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL row locks; the CI runs it there")
@pytest.mark.django_db(transaction=True)
def test_concurrent_settlements_on_postgresql_drain_to_exactly_zero(owner):
    services.get_account(owner)
    charged, errors = _run_threads(owner)  # 500 credits, far more demand than supply
    assert errors == []
    account = CreditAccount.objects.get(user=owner)
    assert account.balance == CreditEntry.objects.filter(user=owner).aggregate(total=Sum("amount"))["total"]
    assert account.balance == services.PLANS["free"].monthly_credits - sum(charged) >= 0
