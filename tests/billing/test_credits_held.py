"""What the live page shows as held while turns are written: open reservations only."""

from __future__ import annotations

import pytest

from billing.services import credits_held, grant_credits, release_credits, reserve_credits, settle_credits

pytestmark = pytest.mark.django_db


def test_credits_held_counts_open_reservations_only(owner):
    grant_credits(user=owner, amount=100, key="grant", description="test")
    reserve_credits(user=owner, amount=10, key="turn:1:reserve")
    reserve_credits(user=owner, amount=7, key="turn:2:reserve")
    reserve_credits(user=owner, amount=5, key="turn:3:reserve")
    keys = ["turn:1:reserve", "turn:2:reserve", "turn:3:reserve", "turn:4:reserve"]
    assert credits_held(reservation_keys=keys) == 22
    settle_credits(user=owner, reservation_key="turn:1:reserve", actual=3, key="turn:1:settle")
    release_credits(user=owner, reservation_key="turn:2:reserve", key="turn:2:release")
    assert credits_held(reservation_keys=keys) == 5
    assert credits_held(reservation_keys=[]) == 0
    assert credits_held(reservation_keys=["turn:2:reserve"]) == 0
