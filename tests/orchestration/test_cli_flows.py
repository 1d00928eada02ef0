"""CLI parity: every registered flow can be created and run from the command line alone
(`create_session` from a shipped preset of that flow, then `run_session`), streaming each turn under
its agent's label, with the offline demo provider. A flow added to the registry without a shipped
preset, or one the commands cannot run, fails here."""

from __future__ import annotations

import re

import pytest

from orchestration.flows import POLICIES
from orchestration.models import Status, TeamPreset, Turn, WritingSession
from tests.orchestration.test_commands import run


@pytest.fixture
def pro_writer(catalogue):
    from billing.plans import PRO
    from billing.services import get_account, grant_credits
    from tests.conftest import make_user

    user = make_user("cli@example.com")
    account = get_account(user)
    account.plan = PRO
    account.save(update_fields=["plan"])
    grant_credits(user=user, amount=200_000, key="test:cli-credits", description="test credits")
    return user


@pytest.fixture
def catalogue(db):
    from orchestration.catalogue import seed_catalogue
    from orchestration.presets import seed_presets

    seed_catalogue()
    seed_presets()


@pytest.fixture
def paced_demo(settings):
    from orchestration.providers import clear_adapter_cache

    settings.DEMO_TOKENS_PER_SECOND = 4000  # paced, so parallel calls' chunks interleave
    clear_adapter_cache()
    yield settings
    clear_adapter_cache()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("flow", sorted(POLICIES))
def test_every_flow_runs_from_the_command_line_with_labelled_streams(
    flow, pro_writer, paced_demo, monkeypatch, tmp_path
):
    monkeypatch.setattr("orchestration.tasks.enqueue_drive", lambda session_id: None)  # run here, not in a worker
    preset = TeamPreset.objects.filter(owner=None, flow=flow).order_by("pk").first()
    assert preset is not None, f"no shipped preset runs the {flow} flow: the command line cannot create one"
    brief = tmp_path / "brief.md"
    brief.write_text("# Protected bike lanes\n\nArgue for protected bike lanes in a short essay.\n", encoding="utf-8")
    out, err = run(
        "create_session", "--user", pro_writer.email, "--preset", preset.slug, "--brief-file", str(brief),
        "--model", "demo:demo-writer", "--rounds", "1",
    )  # fmt: skip
    session_id = int(re.search(r"Session id: (\d+)", out).group(1))
    assert "ready to start" in out, out + err

    output = tmp_path / "final.md"
    out, _ = run("run_session", str(session_id), "--output", str(output))

    session = WritingSession.objects.get(pk=session_id)
    assert session.flow == flow
    assert session.status == Status.COMPLETED, session.stop_detail
    turns = list(Turn.objects.filter(session=session, kind=Turn.Kind.AGENT).order_by("pk"))
    assert turns, "no turn ran"
    for turn in turns:  # every call streamed under its own label, its text on the terminal
        # A planned run's worker runs several tasks at once: its labels also name the task's slot.
        working = flow == "planned" and turn.slot.split(":", 1)[0] in ("task", "repair", "next", "verify")
        label = f"[Round {turn.round} · {turn.agent_name}" + (f" · {turn.slot}" if working else "") + "] "
        assert label in out, f"{label!r} missing from the output"
    assert output.read_text(encoding="utf-8").strip() == (session.final_document or session.document).strip()
    assert f"Session {session_id}: completed after 1 round(s)" in out
