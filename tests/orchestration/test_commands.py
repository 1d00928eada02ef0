"""Management commands: create_session, run_session, check_providers and seed_catalogue, as an operator uses them."""

from __future__ import annotations

import re
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from orchestration.catalogue import seed_catalogue
from orchestration.models import (
    Agent,
    LLMModel,
    Project,
    ReferenceDocument,
    SessionEvent,
    Status,
    StopReason,
    TeamPreset,
    Turn,
    WritingSession,
)
from orchestration.presets import seed_presets
from tests.conftest import make_user
from tests.live import free_port

PRESET_SLUG = "academic-writer-critical-editor"
PRESET_NAME = "Academic writer + critical editor"


def run(*args, **kwargs) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err, **kwargs)
    return out.getvalue(), err.getvalue()


def run_failing(*args) -> tuple[CommandError, str, str]:
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as info:
        call_command(*args, stdout=out, stderr=err)
    return info.value, out.getvalue(), err.getvalue()


def provider_block(output: str, header: str) -> str:
    """The lines a check_providers report prints for one provider (its header and indented lines)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        block.append(line)
    return "\n".join(block)


@pytest.fixture
def catalogue(db):
    # Transactional tests flush the rows the data migration seeded; the seed is idempotent.
    seed_catalogue()
    seed_presets()


@pytest.fixture
def writer(catalogue):
    """A Free-plan user, as after signing up (the Free plan allows the Demo model)."""
    return make_user("writer@example.com")


@pytest.fixture
def brief_file(tmp_path) -> Path:
    path = tmp_path / "brief.md"
    path.write_text("# Bike lanes for Springfield\n\nArgue for protected bike lanes in 600 words.\n", encoding="utf-8")
    return path


def create(brief_file: Path, *extra: str, user: str = "writer@example.com") -> tuple[str, str]:
    return run("create_session", "--user", user, "--preset", PRESET_SLUG, "--brief-file", str(brief_file), *extra)


# --- create_session ----------------------------------------------------------------------------------


def test_create_session_builds_a_draft_from_the_preset_brief_document_and_references(writer, brief_file, tmp_path):
    document = tmp_path / "draft.md"
    document.write_text("# Draft\n\nBikes are good.\n", encoding="utf-8")
    reference = tmp_path / "traffic-study.md"
    reference.write_text("Protected lanes cut injuries by 40% in the 2019 study.", encoding="utf-8")

    out, err = create(brief_file, "--document", str(document), "--reference", str(reference), "--rounds", "2")

    session = WritingSession.objects.get()
    assert session.project.owner == writer
    assert session.project.name == "Command line"
    assert session.status == Status.DRAFT
    assert session.title == "Bike lanes for Springfield"  # the brief's first heading
    assert session.brief.startswith("# Bike lanes for Springfield")
    assert session.document == "# Draft\n\nBikes are good.\n"
    assert session.max_rounds == 2
    assert [a.name for a in session.agents.order_by("order")] == ["Academic writer", "Critical editor"]
    assert all(a.model.provider == "demo" for a in session.agents.all())
    assert list(session.references.values_list("title", "source_filename")) == [("traffic-study", "traffic-study.md")]
    assert f"Session id: {session.pk}" in out
    assert f"/sessions/{session.pk}/edit/" in out
    assert "ready to start" in out and "not ready" not in out
    assert err == ""


def test_create_session_reuses_a_project_by_name_and_finds_presets_by_name(writer, brief_file):
    create(brief_file, "--project", "Essays", "--rounds", "2")
    run(
        "create_session",
        "--user",
        "WRITER@example.com",
        "--preset",
        PRESET_NAME.lower(),
        "--brief-file",
        str(brief_file),
        "--project",
        "Essays",
        "--title",
        "Second take",
    )
    assert Project.objects.filter(owner=writer).count() == 1
    assert list(WritingSession.objects.order_by("pk").values_list("title", flat=True)) == [
        "Bike lanes for Springfield",
        "Second take",
    ]


def test_create_session_model_override_replaces_every_agents_model(writer, brief_file):
    claude = LLMModel.objects.get(provider="anthropic", model_id="claude-sonnet-4-5")
    TeamPreset.objects.create(
        owner=writer,
        slug="my-claude-team",
        name="My Claude team",
        data={
            "agents": [
                {
                    "name": "Writer",
                    "model": "anthropic:claude-sonnet-4-5",
                    "fallback_model": "openai:gpt-5",
                    "role_prompt": "Write.",
                    "criteria": [{"name": "Clarity", "weight": 1}],
                }
            ],
            "max_rounds": 2,
        },
    )
    run(
        "create_session",
        "--user",
        writer.email,
        "--preset",
        "my-claude-team",
        "--brief-file",
        str(brief_file),
        "--model",
        "demo:demo-writer",
    )
    agent = Agent.objects.get()
    assert agent.model.provider == "demo"
    assert agent.model != claude
    assert agent.fallback_model is None


def test_create_session_warns_when_the_draft_could_not_start_on_the_users_plan(writer, brief_file):
    # 8 rounds are more than the Free plan's 6. The draft is still created, with a warning.
    out, err = create(brief_file, "--rounds", "8")
    assert "The Free plan allows up to 6 rounds" in err
    assert "not ready to start" in out
    assert WritingSession.objects.get().max_rounds == 8


def test_create_session_dry_run_saves_nothing(writer, brief_file):
    out, _ = create(brief_file, "--rounds", "2", "--dry-run")
    assert "Would create draft session" in out
    assert "Dry run: nothing was saved." in out
    assert not WritingSession.objects.exists()
    assert not Project.objects.exists()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d / "missing.md", "does not exist"),
        (lambda d: (d / "blob.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR") and d / "blob.md", "binary"),
        (lambda d: (d / "latin.md").write_bytes("Caf\xe9 society".encode("latin-1")) and d / "latin.md", "not UTF-8"),
        (lambda d: (d / "empty.md").write_text("  \n") and d / "empty.md", "is empty"),
        (lambda d: d, "not a regular file"),
    ],
    ids=["missing", "binary", "not-utf8", "empty", "directory"],
)
def test_create_session_refuses_unusable_brief_files(writer, tmp_path, setup, message):
    path = setup(tmp_path)
    error, _, _ = run_failing(
        "create_session", "--user", writer.email, "--preset", PRESET_SLUG, "--brief-file", str(path)
    )
    assert message in str(error)
    assert str(path) in str(error)
    assert not WritingSession.objects.exists()


def test_create_session_refuses_a_too_long_reference(writer, brief_file, tmp_path):
    from orchestration.uploads import MAX_REFERENCE_CHARS

    big = tmp_path / "big.md"
    big.write_text("x" * (MAX_REFERENCE_CHARS + 1), encoding="utf-8")
    error, _, _ = run_failing(
        "create_session", "--user", writer.email, "--preset", PRESET_SLUG, "--brief-file", str(brief_file),
        "--reference", str(big),
    )  # fmt: skip
    assert "too long" in str(error)
    assert not ReferenceDocument.objects.exists()


def test_create_session_refuses_an_unknown_user(catalogue, brief_file):
    error, _, _ = run_failing(
        "create_session", "--user", "nobody@example.com", "--preset", PRESET_SLUG, "--brief-file", str(brief_file)
    )
    assert str(error) == "No user with email 'nobody@example.com'."


def test_create_session_refuses_an_unknown_preset_and_lists_the_available_ones(writer, brief_file):
    error, _, _ = run_failing(
        "create_session", "--user", writer.email, "--preset", "poets", "--brief-file", str(brief_file)
    )
    assert "No team preset 'poets'" in str(error)
    assert PRESET_SLUG in str(error)


def test_create_session_does_not_offer_another_users_preset(writer, brief_file):
    other = make_user("other@example.com")
    TeamPreset.objects.create(owner=other, slug="secret-team", name="Secret team", data={"agents": []})
    error, _, _ = run_failing(
        "create_session", "--user", writer.email, "--preset", "secret-team", "--brief-file", str(brief_file)
    )
    assert "No team preset 'secret-team'" in str(error)
    assert "Secret team" not in str(error)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "demo"], "provider:model_id"),
        (["--model", "openai:gpt-99"], "not in the model catalogue"),
        (["--rounds", "0"], "--rounds must be between 1 and 50"),
    ],
)
def test_create_session_refuses_bad_options(writer, brief_file, args, message):
    error, _, _ = run_failing(
        "create_session", "--user", writer.email, "--preset", PRESET_SLUG, "--brief-file", str(brief_file), *args
    )
    assert message in str(error)
    assert not WritingSession.objects.exists()


def test_create_session_refuses_an_unpriced_model_override(writer, brief_file):
    LLMModel.objects.filter(provider="openai", model_id="gpt-5").update(input_price_per_mtok=None)
    error, _, _ = run_failing(
        "create_session", "--user", writer.email, "--preset", PRESET_SLUG, "--brief-file", str(brief_file),
        "--model", "openai:gpt-5",
    )  # fmt: skip
    assert "has no price" in str(error)


# --- run_session ------------------------------------------------------------------------------------


def _draft(brief_file: Path, *extra: str) -> WritingSession:
    create(brief_file, *extra)
    return WritingSession.objects.order_by("-pk").first()


@pytest.mark.django_db(transaction=True)
def test_run_session_runs_a_demo_draft_to_the_end_streaming_tokens_scores_and_reason(
    writer, brief_file, tmp_path, enqueued, instant_demo
):
    session = _draft(brief_file, "--rounds", "2")
    output = tmp_path / "final.md"

    out, _ = run("run_session", str(session.pk), "--output", str(output))

    session.refresh_from_db()
    assert session.status == Status.COMPLETED
    assert session.stop_reason == StopReason.MAX_ROUNDS
    assert enqueued == [session.pk]  # start_session handed it to the broker; this process ran it
    # Tokens, labelled at the start of each turn.
    assert "[Round 1 · Academic writer] # Bike lanes for Springfield" in out
    assert "[Round 2 · Critical editor] # Bike lanes for Springfield" in out
    streamed = "".join(
        e.payload["text"] for e in SessionEvent.objects.filter(session=session, kind="chunk").order_by("seq")
    )
    assert "<evaluation>" in streamed and "<evaluation>" in out
    # Scores per turn, then per round (overall and per criterion).
    first = Turn.objects.filter(session=session).order_by("pk").first()
    assert f"[Round 1 · Academic writer] scores: overall {round(first.overall_score, 1):g}" in out
    assert "Scores by round:" in out
    assert "  Round 2  Academic writer: overall" in out
    assert "Argument strength" in out and "Evidence" in out
    assert "Ended: Completed — Reached the maximum number of rounds" in out
    # The final document, without the evaluation blocks.
    written = output.read_text(encoding="utf-8")
    assert written.strip() == session.final_document.strip()
    assert written.startswith("# Bike lanes for Springfield")
    assert "<evaluation>" not in written
    assert f"final document written to {output}" in out


@pytest.mark.django_db(transaction=True)
def test_run_session_no_stream_prints_turns_and_scores_but_not_tokens(writer, brief_file, enqueued, instant_demo):
    session = _draft(brief_file, "--rounds", "1")
    out, _ = run("run_session", str(session.pk), "--no-stream")
    assert "[Round 1 · Academic writer] writing with Demo" in out
    assert "[Round 1 · Critical editor] scores: overall" in out
    assert "<evaluation>" not in out
    # Without --output the final document is printed at the end.
    assert "===== Final document =====\n# Bike lanes for Springfield" in out


@pytest.mark.django_db(transaction=True)
def test_run_session_sets_the_rounds_of_a_draft_before_starting(writer, brief_file, enqueued, instant_demo):
    session = _draft(brief_file)  # the preset's 4 rounds: more than the Free plan allows
    run("run_session", str(session.pk), "--rounds", "1", "--no-stream", "--output", "/dev/null")
    session.refresh_from_db()
    assert session.max_rounds == 1
    assert session.status == Status.COMPLETED
    assert set(Turn.objects.filter(session=session).values_list("round", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_run_session_refuses_a_session_that_cannot_start_with_the_reason(writer, brief_file, enqueued):
    session = _draft(brief_file, "--rounds", "8")  # more than the Free plan's 6
    error, _, _ = run_failing("run_session", str(session.pk))
    assert str(error) == (
        f"Session {session.pk} cannot run: The Free plan allows up to 6 rounds per session. "
        "Upgrade to Starter for up to 10."
    )
    assert error.returncode == 1
    session.refresh_from_db()
    assert session.status == Status.DRAFT
    assert enqueued == []


@pytest.mark.django_db(transaction=True)
def test_run_session_refuses_an_incomplete_draft(writer, enqueued):
    session = WritingSession.objects.create(project=Project.objects.create(owner=writer, name="P"), title="T", brief="")
    error, _, _ = run_failing("run_session", str(session.pk))
    assert "Write a brief" in str(error)
    assert "Add at least one active agent" in str(error)


@pytest.mark.django_db(transaction=True)
def test_run_session_explains_unknown_ids_bad_output_paths_and_finished_sessions(
    writer, brief_file, tmp_path, enqueued, instant_demo
):
    error, _, _ = run_failing("run_session", "999999")
    assert str(error) == "No session with id 999999."

    session = _draft(brief_file, "--rounds", "1")
    error, _, _ = run_failing("run_session", str(session.pk), "--output", str(tmp_path / "nope" / "final.md"))
    assert "does not exist" in str(error)
    session.refresh_from_db()
    assert session.status == Status.DRAFT  # refused before starting anything

    run("run_session", str(session.pk), "--no-stream", "--output", str(tmp_path / "final.md"))
    error, _, _ = run_failing("run_session", str(session.pk))
    assert "has already finished" in str(error)
    assert "--rounds N" in str(error)


@pytest.mark.django_db(transaction=True)
def test_run_session_continues_a_finished_session_for_more_rounds(writer, brief_file, enqueued, instant_demo):
    session = _draft(brief_file, "--rounds", "1")
    run("run_session", str(session.pk), "--no-stream", "--output", "/dev/null")
    out, _ = run("run_session", str(session.pk), "--rounds", "1", "--no-stream", "--output", "/dev/null")
    session.refresh_from_db()
    assert out.startswith(f"Continued session {session.pk}")
    assert session.status == Status.COMPLETED
    assert session.current_round == 2
    assert "[Round 2 · Critical editor] scores" in out


@pytest.mark.django_db(transaction=True)
def test_run_session_ctrl_c_stops_the_session_and_still_writes_the_document(
    writer, brief_file, tmp_path, enqueued, settings, monkeypatch
):
    from orchestration.management import terminal as command  # where run_session reads its events
    from orchestration.providers import clear_adapter_cache

    # Slow enough that a turn is still streaming when the user presses Ctrl-C.
    settings.DEMO_TOKENS_PER_SECOND = 40
    clear_adapter_cache()
    real_events_after = command.events_after
    pressed: list[bool] = []

    def events_after(session_id, after_seq):
        events = real_events_after(session_id, after_seq)
        if not pressed and any(e.kind == "chunk" for e in events):
            pressed.append(True)
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
        return events

    monkeypatch.setattr(command, "events_after", events_after)
    session = _draft(brief_file, "--rounds", "2")
    output = tmp_path / "final.md"
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as info:
        call_command("run_session", str(session.pk), "--output", str(output), stdout=out, stderr=err)
    clear_adapter_cache()

    assert info.value.returncode == 130
    assert "Stopping the session" in err.getvalue()
    session.refresh_from_db()
    assert session.status == Status.STOPPED
    assert session.stop_reason == StopReason.USER_STOPPED
    assert "Ended: Stopped — Stopped by you" in out.getvalue()
    stopped = Turn.objects.get(session=session, status=Turn.TurnStatus.CANCELLED)
    assert stopped.output_text  # what was written before the stop is kept
    assert output.exists()
    assert output.read_text(encoding="utf-8").strip() == session.final_document.strip()
    # Nothing printed twice after the interruption.
    assert out.getvalue().count("[Session] Running") == 1


# --- check_providers --------------------------------------------------------------------------------


def test_check_providers_without_keys_names_the_variable_to_set(catalogue, settings):
    settings.PROVIDERS = {}
    LLMModel.objects.filter(provider="openai", model_id="gpt-5").update(output_price_per_mtok=None)
    out, _ = run("check_providers")
    assert "Demo (offline, not a language model) [demo]: configured" in out
    for header, variable in [
        ("Anthropic [anthropic]", "ANTHROPIC_API_KEY"),
        ("OpenAI [openai]", "OPENAI_API_KEY"),
        ("Google Gemini [gemini]", "GEMINI_API_KEY"),
        ("xAI [xai]", "XAI_API_KEY"),
        ("OpenAI-compatible server [compatible]", "COMPATIBLE_BASE_URL"),
    ]:
        block = provider_block(out, header)
        assert "not configured" in block.splitlines()[0]
        assert variable in block.splitlines()[0]
    assert "https://api.anthropic.com (SDK default)" in provider_block(out, "Anthropic [anthropic]")
    gpt5 = next(line for line in out.splitlines() if line.startswith("  - gpt-5:"))
    assert "NO PRICE" in gpt5
    assert "1 of 6 providers configured" in out
    assert "1 without a price" in out


def test_check_providers_live_without_keys_checks_only_the_demo(catalogue, settings):
    settings.PROVIDERS = {}
    out, _ = run("check_providers", "--live")  # no CommandError: unconfigured is not a failure
    assert "Live check: OK" in provider_block(out, "Demo (offline, not a language model) [demo]")
    assert "Live check: skipped (not configured)" in provider_block(out, "Anthropic [anthropic]")
    assert "live check: 1 OK, 0 failed" in out


def test_check_providers_live_lists_models_without_spending_tokens(catalogue, settings, fake_llm):
    from orchestration.providers import clear_adapter_cache

    settings.PROVIDERS = fake_llm.provider_settings(api_key="sk-test-secret-4242")
    clear_adapter_cache()
    out, _ = run("check_providers", "--live")
    clear_adapter_cache()

    for header in ["Anthropic [anthropic]", "OpenAI [openai]", "Google Gemini [gemini]", "xAI [xai]"]:
        block = provider_block(out, header)
        assert ": configured" in block
        assert "Live check: OK" in block
        assert fake_llm.url in block  # the base URL is shown...
    assert "sk-test-secret-4242" not in out  # ...the key never
    assert "API key: set" in provider_block(out, "OpenAI [openai]")
    assert "6 of 6 providers configured" in out
    assert "live check: 6 OK, 0 failed" in out
    assert fake_llm.generation_requests() == []
    assert any(r.path == "/v1/models" for r in fake_llm.requests)


def test_check_providers_live_fails_when_a_configured_provider_does_not_answer(catalogue, settings, fake_llm):
    from orchestration.providers import clear_adapter_cache

    providers = fake_llm.provider_settings(api_key="sk-right")
    providers["openai"] = {"api_key": "sk-wrong-key-9999", "base_url": fake_llm.openai_url}
    providers["xai"] = {"api_key": "sk-right", "base_url": f"http://user:hunter2@127.0.0.1:{free_port()}/v1"}
    fake_llm.expected_api_key = "sk-right"
    settings.PROVIDERS = providers
    clear_adapter_cache()
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as info:
        call_command("check_providers", "--live", stdout=out, stderr=err)
    clear_adapter_cache()

    output = out.getvalue()
    assert info.value.returncode == 1
    assert "Live check: OK" in provider_block(output, "Anthropic [anthropic]")
    assert "Live check: FAILED" in provider_block(output, "OpenAI [openai]")
    assert "Live check: FAILED" in provider_block(output, "xAI [xai]")
    assert "sk-wrong-key-9999" not in output
    assert "hunter2" not in output  # credentials in a base URL are hidden too
    assert fake_llm.generation_requests() == []


# --- seed_catalogue ---------------------------------------------------------------------------------


def test_seed_catalogue_dry_run_lists_changes_and_saves_nothing(catalogue):
    LLMModel.objects.filter(provider="openai", model_id="gpt-5").delete()
    LLMModel.objects.filter(provider="xai", model_id="grok-4").update(input_price_per_mtok=None)
    TeamPreset.objects.filter(owner=None).delete()

    out, _ = run("seed_catalogue", "--dry-run")

    assert "would create openai:gpt-5" in out
    assert "would update xai:grok-4 (input_price_per_mtok)" in out
    assert "Dry run: would change 2 of" in out
    assert "(1 new, 1 updated)" in out
    assert not LLMModel.objects.filter(provider="openai", model_id="gpt-5").exists()
    assert LLMModel.objects.get(provider="xai", model_id="grok-4").input_price_per_mtok is None
    assert not TeamPreset.objects.exists()


def test_seed_catalogue_restores_missing_rows_and_prices_but_keeps_staff_edits(catalogue):
    LLMModel.objects.filter(provider="openai", model_id="gpt-5").delete()
    LLMModel.objects.filter(provider="xai", model_id="grok-4").update(input_price_per_mtok=None)
    LLMModel.objects.filter(provider="anthropic", model_id="claude-opus-4-5").update(credit_multiplier=Decimal("9"))

    out, _ = run("seed_catalogue")

    assert LLMModel.objects.filter(provider="openai", model_id="gpt-5").exists()
    assert LLMModel.objects.get(provider="xai", model_id="grok-4").input_price_per_mtok is not None
    assert LLMModel.objects.get(provider="anthropic", model_id="claude-opus-4-5").credit_multiplier == Decimal("9")
    assert "Changed 2 of" in out
    assert TeamPreset.objects.filter(owner=None, slug=PRESET_SLUG).exists()

    out, _ = run("seed_catalogue")
    assert "Changed 0 of" in out  # idempotent


def test_seed_catalogue_update_prices_resets_staff_edits_to_the_shipped_values(catalogue):
    LLMModel.objects.filter(provider="anthropic", model_id="claude-opus-4-5").update(
        credit_multiplier=Decimal("9"), output_price_per_mtok=Decimal("1")
    )
    custom = LLMModel.objects.create(
        provider="compatible", model_id="my-local", display_name="Mine", context_window=4096,
        input_price_per_mtok=Decimal("7"), output_price_per_mtok=Decimal("7"),
    )  # fmt: skip

    out, _ = run("seed_catalogue", "--update-prices")

    opus = LLMModel.objects.get(provider="anthropic", model_id="claude-opus-4-5")
    assert opus.credit_multiplier != Decimal("9")
    assert opus.output_price_per_mtok != Decimal("1")
    assert "update anthropic:claude-opus-4-5 (" in out
    custom.refresh_from_db()
    assert custom.input_price_per_mtok == Decimal("7")  # a model staff added is never touched


@pytest.mark.django_db(transaction=True)
def test_run_session_runs_a_roundtable_with_parallel_labels_phases_and_the_report(writer, enqueued, settings):
    """Any flow runs: parallel critics print under their own labels, phases are announced, the report ends it."""
    from billing.plans import PRO
    from billing.services import get_account, grant_credits
    from orchestration import presets
    from orchestration.models import Project, TeamPreset
    from orchestration.providers import clear_adapter_cache

    settings.DEMO_TOKENS_PER_SECOND = 2000  # paced, so the three critics' chunks interleave
    clear_adapter_cache()
    account = get_account(writer)
    account.plan = PRO
    account.save(update_fields=["plan"])
    grant_credits(user=writer, amount=100_000, key="test:credits", description="test credits")
    presets.seed_presets()
    session = WritingSession.objects.create(
        project=Project.objects.create(owner=writer, name="Specs"),
        title="Checkout",
        brief="A one-page spec for a faster checkout.",
        document="# Checkout\n\nOne page. Payment stays as it is.\n",
    )
    presets.apply_preset(session=session, preset=TeamPreset.objects.get(owner=None, slug="product-roundtable"))

    out, _ = run("run_session", str(session.pk), "--output", "/dev/null")
    clear_adapter_cache()

    session.refresh_from_db()
    assert session.status == Status.COMPLETED and session.stop_reason == StopReason.NO_HIGH_ISSUES
    assert "[Round 1] reviewing\n" in out and "[Round 1] moderating\n" in out and "[Round 2] reviewing\n" in out
    for critic in ("Product critic", "Engineering critic", "Risk critic"):
        assert f"[Round 1 · {critic}] " in out
        # The demo's critics raise what they find in the draft: at least one high-severity issue each.
        assert re.search(rf"\[Round 1 · {critic}\] issues: [1-9]\d* high[^\n]* \(parsed from json\)", out), out
    assert "[Round 1 · Moderator] resolutions: " in out
    assert "# Convergence report: Checkout" in out and "## Round 2" in out
    assert "Ended: Completed — No high-severity issues left" in out
