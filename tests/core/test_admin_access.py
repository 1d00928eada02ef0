"""Admin access: staff only, and the task-queue admin for superusers only."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from tests.conftest import make_user

BASE_DIR = Path(settings.BASE_DIR)


# --- django-q2 admin is for superusers only ---------------------------------------------------------

Q_ADMIN_URLS = [
    "/admin/django_q/schedule/",
    "/admin/django_q/schedule/add/",
    "/admin/django_q/success/",
    "/admin/django_q/failure/",
]


@pytest.fixture
def staff_client(db):
    user = make_user("staff@example.com", is_staff=True)
    # Even every django_q permission must not open it: a Schedule's `func` runs any dotted path.
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="django_q"))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def superuser_client(db):
    user = get_user_model().objects.create_superuser("root@example.com", "root@example.com", "x" * 20)
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("url", Q_ADMIN_URLS)
def test_task_queue_admin_is_closed_to_staff_who_are_not_superusers(staff_client, url):
    response = staff_client.get(url)
    assert response.status_code in (302, 403)


def test_task_queue_admin_is_not_listed_for_staff(staff_client):
    response = staff_client.get("/admin/")
    assert response.status_code == 200
    assert "/admin/django_q/" not in response.content.decode()


@pytest.mark.parametrize("url", Q_ADMIN_URLS)
def test_task_queue_admin_is_open_to_superusers(superuser_client, url):
    assert superuser_client.get(url).status_code == 200


def test_admin_requires_staff(client, db):
    client.force_login(make_user("plain@example.com"))
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
