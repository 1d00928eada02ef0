"""Database connections under daphne (issue 15): the web process borrows PostgreSQL connections from a
pool and gives them back at the end of each request, instead of leaving one open per request thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import connection

from tests.live import BASE_DIR, start_web, wait_for

SHOW_DB = (
    "import json, os, sys; {setup}; from django.db import connection; "
    "d = connection.settings_dict; print(json.dumps([d['CONN_MAX_AGE'], d['OPTIONS'].get('pool'), "
    "os.environ.get('DB_POOL')]))"
)


def _database_settings(setup: str, **env: str) -> list:
    run_env = {k: v for k, v in os.environ.items() if k != "DB_POOL"}
    run_env.update(DATABASE_URL="postgres://u@127.0.0.1:5432/nowhere", **env)
    out = subprocess.run(
        [sys.executable, "-c", SHOW_DB.format(setup=setup)],
        cwd=BASE_DIR,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_web_process_pools_postgresql_connections_and_workers_keep_theirs():
    # As daphne loads it: a pool, no persistent connections, and DB_POOL not left for its children.
    max_age, pool, leaked = _database_settings("import atelier.asgi")
    assert max_age == 0 and pool == {"min_size": 2, "max_size": 10, "timeout": 10.0}
    assert leaked is None
    # As manage.py qcluster loads it (django-q2 forks: no pool crosses a fork): persistent connections.
    max_age, pool, _ = _database_settings(
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'atelier.settings'); import django; django.setup()"
    )
    assert max_age == 60 and pool is None
    # An operator can turn it off for the web process (and size it: DB_POOL_MAX_SIZE, DB_POOL_TIMEOUT).
    max_age, pool, _ = _database_settings("import atelier.asgi", DB_POOL="0")
    assert max_age == 60 and pool is None


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"), reason="PostgreSQL connections")
def test_many_concurrent_requests_leave_at_most_the_pool_open(client, owner):
    client.force_login(owner)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    app_name = f"atelier-web-{uuid.uuid4().hex[:8]}"
    web, url = start_web(PGAPPNAME=app_name)

    def backends() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
                [app_name],
            )
            return cursor.fetchone()[0]

    def page(_: int) -> int:
        request = urllib.request.Request(url + "/dashboard/", headers={"Cookie": cookie})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status

    try:
        with ThreadPoolExecutor(max_workers=24) as pool:
            statuses = list(pool.map(page, range(60)))  # 60 requests, up to 24 at once: 60 request threads
        assert statuses == [200] * 60
        # Each request thread gave its connection back: what stays open is the pool (max 10), not one
        # per thread that ever served a request (60 with CONN_MAX_AGE=60 and no pool).
        wait_for(lambda: backends() <= 10, timeout=10, message="connections back in the pool")
        assert 1 <= backends() <= 10
    finally:
        web.stop()
    wait_for(lambda: backends() == 0, timeout=20, message="the web process's connections to close with it")
