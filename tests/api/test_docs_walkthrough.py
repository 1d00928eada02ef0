"""docs/api.md's walk-through runs verbatim: its shell blocks, in order, in one bash, against daphne and a
django-q2 worker on the test database. What it prints and saves must be the session's real document."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from orchestration.models import Status, WritingSession
from tests.api.conftest import new_key
from tests.studio_fixtures import catalogue_model

pytestmark = pytest.mark.django_db(transaction=True)

DOC = Path(settings.BASE_DIR) / "docs" / "api.md"


def walkthrough_script() -> str:
    text = DOC.read_text()
    section = text.split("## Walk-through", 1)[1]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 5, "the walk-through lost its steps"
    return "set -euo pipefail\n" + "\n".join(blocks)


@pytest.mark.live_app(DEMO_TOKENS_PER_SECOND="400")
@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="the walk-through needs curl and jq")
def test_the_curl_walkthrough_in_docs_api_md_runs_verbatim(live_app, owner, tmp_path):
    catalogue_model("demo", "demo-writer", output="0", name="Demo writer")
    key = new_key(owner, "docs walk-through")
    result = subprocess.run(
        ["bash", "-c", walkthrough_script()],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "ATELIER_URL": live_app.url, "ATELIER_KEY": key},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, (
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\nweb log:\n{live_app.web.log()[-3000:]}"
    )
    session = WritingSession.objects.get(project__owner=owner, title="Bike lanes")
    assert session.status == Status.COMPLETED and session.agents.count() == 2
    assert f"session {session.pk}" in result.stdout and "queued" in result.stdout
    assert "event: end" in result.stdout  # the stream ran to the run's end and closed
    assert (tmp_path / "document.txt").read_text().strip() == session.document.strip()
    assert session.document.strip()[:80] in (tmp_path / "essay.md").read_text()
