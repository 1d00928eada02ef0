"""Drives one conversation reply: triage, handoffs, tools and agent-as-tool calls, to the final answer.

Built on the engine's machinery rather than a copy of it: the per-session lease (`orchestration.lease`:
claim, renew, fenced writes, the watchdog re-dispatching a dead worker's run), the numbered event log and
its chunk batcher (`orchestration.events`, `chunks.ChunkBatcher`), the engine's retry rules and failed-
attempt accounting (`calls.retry_plan`, `turns.abandon_turn`, `turns.recover_interrupted_turns`), the
provider adapters and the credit ledger (reserve before a call, settle after it). Each model call is a
Turn of the conversation's hidden session; its messages (reply, handoff, tool calls) are written in the
same transaction that settles it, guarded by the turn's status, so a call re-run after a crash never
adds a message or a charge twice, and a call cut by a crash is re-run from the saved state
(`flow.next_move`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from orchestration import calls, engine
from orchestration import events as ev
from orchestration import turns as engine_turns
from orchestration.chunks import ChunkBatcher
from orchestration.conversations import flow, pipeline, turns
from orchestration.conversations.models import Conversation, Message, MessageRole, MessageStatus
from orchestration.conversations.turns import Attempt, Prepared, Transcript
from orchestration.db_thread import db, in_db_thread
from orchestration.lease import LeaseLost, fence, release_lease, renew_lease
from orchestration.models import Agent, LLMModel, Status, StopReason, Turn, WritingSession
from orchestration.providers.base import ModelRequest, ProviderError, StreamEnd, ToolCall
from orchestration.services import set_status, status_payload

if TYPE_CHECKING:
    from orchestration.reasoning import ReasoningPlan

logger = logging.getLogger(__name__)

DRIVE_BUDGET_SECONDS = 240


def drive(session_id: int, *, budget_seconds: float = DRIVE_BUDGET_SECONDS) -> str:
    """Write the conversation's pending reply. Outcomes as engine.drive: busy, idle (also when the session or
    its conversation was deleted while it ran), finished, stopped, failed, requeued, lease_lost."""
    return engine.drive_with_lease(session_id, drive_leased, budget_seconds)


async def drive_leased(session_id: int, owner: str, budget_seconds: float = DRIVE_BUDGET_SECONDS) -> str:
    """The drive coroutine of a conversation session whose lease `owner` already holds (orchestration.host).

    Outcomes as drive(); "idle" if the session or its conversation was deleted. Raises LeaseLost if another
    executor takes the session over; the caller releases the lease.
    """
    try:
        return await _drive(session_id, owner, budget_seconds)
    except (WritingSession.DoesNotExist, Conversation.DoesNotExist):
        return "idle"  # deleted while it ran


async def _drive(session_id: int, owner: str, budget_seconds: float) -> str:
    deadline = time.monotonic() + budget_seconds
    drive_state = _DriveState()
    while True:
        prepared = await db(_prepare, session_id, owner, drive_state)
        if isinstance(prepared, str):
            return prepared
        outcome = await run_call(prepared, owner=owner)
        if outcome == "finished":  # the final answer was saved and the run completed in the same transaction
            return "finished"
        if outcome == "saved":
            drive_state.calls += 1
        if outcome in ("failed", "out_of_credits"):
            return "failed"
        if time.monotonic() > deadline:
            await in_db_thread(_requeue, session_id, owner)
            return "requeued"


def _requeue(session_id: int, owner: str) -> None:
    from orchestration.services import enqueue_run

    if release_lease(session_id, owner):
        enqueue_run(session_id)


@dataclass
class _DriveState:
    """What one drive reads once and keeps between its calls (it holds the lease: nobody else runs them)."""

    recovered: bool = False  # a dead worker's streaming call was dealt with
    conversation: Conversation | None = None
    agents: list[Agent] | None = None
    calls: int = -1  # model calls of this reply that ended (counted once, then kept up to date)


def _set(session: WritingSession, status: str, *, owner: str, outbox: ev.Outbox | None, **fields: Any) -> None:
    """Move the run to `status` (with `fields`) and announce it, fenced."""
    with transaction.atomic():
        fence(session.pk, owner)
        if set_status(session, status, **fields):
            ev.append_event(session_id=session.pk, kind="status", payload=status_payload(session), outbox=outbox)


def _prepare(
    session_id: int, owner: str, drive_state: _DriveState | None = None, *, outbox: ev.Outbox | None = None
) -> str | Prepared:
    """Finish a stop, recover a call a dead worker left streaming, then plan the next call (fenced).
    `drive_state` keeps what does not change between the calls of one drive (read on its first call)."""
    drive_state = drive_state or _DriveState()
    session = WritingSession.objects.select_related("project__owner").get(pk=session_id)
    if session.status == Status.STOPPING:
        _set(session, Status.STOPPED, owner=owner, outbox=outbox, finished_at=timezone.now())
        return "stopped"
    if session.status not in (Status.QUEUED, Status.RUNNING):
        return "idle"
    if not drive_state.recovered:
        engine_turns.recover_interrupted_turns(session, owner=owner, outbox=outbox)
        drive_state.recovered = True
    if session.status == Status.QUEUED:
        _set(session, Status.RUNNING, owner=owner, outbox=outbox)
    if drive_state.conversation is None or drive_state.agents is None:
        drive_state.conversation = Conversation.objects.select_related("project").get(session_id=session_id)
        drive_state.agents = list(session.agents.filter(active=True).select_related("model", "fallback_model"))
    if drive_state.calls < 0:
        drive_state.calls = Turn.objects.filter(
            session=session, started_at__gte=session.started_at, status__in=Turn.DONE_STATUSES
        ).count()
    conversation, agents = drive_state.conversation, drive_state.agents
    move: flow.Call | pipeline.StageCall | flow.Done
    if conversation.flow == "pipeline":  # research -> plan -> build -> review per message (conversations/pipeline.py)
        messages: list[Message] = []
        move = pipeline.next_move(conversation, agents, drive_state.calls)
    else:
        messages = flow.visible_messages(conversation)
        move = flow.next_move(conversation, agents, drive_state.calls, messages)
    if isinstance(move, flow.Done):
        if move.reason == "too_many_calls":
            loop = "The agents kept calling each other without answering; stopped."
            _fail_reply(session.pk, loop, owner=owner, outbox=outbox)
            return "failed"
        _set(session, Status.COMPLETED, owner=owner, outbox=outbox, finished_at=timezone.now())
        return "finished"
    return Prepared(session, conversation, agents, move, messages)


# --- One call ---------------------------------------------------------------------------------------------


async def run_call(prepared: Prepared, *, owner: str) -> str:
    """One call to its end, with the engine's retry rules and the agent's fallback model.

    Returns "saved" (its messages are written), "finished" (saved, and it was the final answer: the run
    completed), "cancelled" (the user stopped it; text kept), "failed"
    or "out_of_credits" (the reply ends with a note saying why)."""
    session, call = prepared.session, prepared.call
    agent = next(a for a in prepared.agents if a.pk == call.agent_id)
    models = [agent.model] + ([agent.fallback_model] if agent.fallback_model is not None else [])
    failures: list[str] = []
    summarised = False  # one summary call per call at most: a second need is met by cutting
    for model in models:
        retries, waited = 0, 0.0
        while True:
            begun = await db(_begin, prepared, agent, model, owner=owner, summarise=not summarised)
            if isinstance(begun, _SummaryNeeded):
                summarised = True
                if await _summarise(prepared, begun.through, owner=owner) == "cancelled":
                    return "cancelled"
                continue
            if isinstance(begun, str):
                if begun.startswith("too_large:"):
                    failures.append(begun.removeprefix("too_large:"))
                    break
                await db(_fail_reply, session.pk, begun, owner=owner, out_of_credits=True)
                return "out_of_credits"
            attempt = Attempt(*begun)
            try:
                result = await _stream(prepared, agent, model, attempt, owner=owner)
            except (LeaseLost, asyncio.CancelledError):
                raise
            except Exception:
                # A bug or an unexpected library error: never leave the call streaming or its credits held.
                logger.exception("conversation turn %s crashed", attempt.turn_id)
                await sync_to_async(engine_turns.fail_turn)(
                    session_id=session.pk, turn_id=attempt.turn_id, text=attempt.text, owner=owner
                )
                await db(_fail_reply, session.pk, engine_turns.INTERNAL_ERROR, owner=owner)
                return "failed"
            if isinstance(result, str):
                return result
            error = result  # a ProviderError to retry on
            plan = calls.retry_plan(error, retries, waited, settings.PROVIDER_MAX_RETRIES)
            note = f" Retrying in {plan:.1f} s." if plan is not None else ""
            status = Turn.TurnStatus.INCOMPLETE if attempt.received else Turn.TurnStatus.FAILED
            await _abandon(prepared, model, attempt, status, error.user_message + note, error, owner=owner)
            if plan is None:
                failures.append(f"{model.display_name}: {error.user_message}")
                break
            retries, waited = retries + 1, waited + plan
            await calls.wait_before_retry(plan)
    await db(_fail_reply, session.pk, f"{agent.name} could not answer. " + " Then ".join(failures), owner=owner)
    return "failed"


async def _stream(
    prepared: Prepared, agent: Agent, model: LLMModel, attempt: Attempt, *, owner: str
) -> str | ProviderError:
    """Stream one attempt, watching for Stop and a lost lease. Returns an outcome string, or the
    ProviderError to retry on. Raises LeaseLost."""
    session_id = prepared.session.pk
    batcher = ChunkBatcher(session_id, owner)
    done = asyncio.Event()
    flusher = asyncio.create_task(batcher.run(done))
    started = time.monotonic()
    first: list[float] = []
    task = asyncio.create_task(calls.read_stream(model, attempt, batcher, first, attempt.calls))
    stop_seen, lease_lost = await _watch(task, batcher, session_id, owner)
    done.set()
    batcher.wake.set()  # run() ends now, not at its next save interval
    await flusher
    await batcher.flush()
    if lease_lost or batcher.lease_lost:
        raise LeaseLost(f"session {session_id}: lease lost during a call")
    try:
        end = task.result()
    except asyncio.CancelledError:
        if not stop_seen:
            raise
        await db(_stopped, prepared, agent, model, attempt, owner=owner)
        return "cancelled"
    except ProviderError as error:
        return error
    timing = (int((time.monotonic() - started) * 1000), int((first[0] - started) * 1000) if first else None)
    return await db(_complete, prepared, agent, model, attempt, end, timing, owner=owner)


async def _watch(
    task: asyncio.Task[StreamEnd], batcher: ChunkBatcher, session_id: int, owner: str
) -> tuple[bool, bool]:
    """Renew the lease every engine.MONITOR_INTERVAL while `task` streams; cancel it on Stop or a lost
    lease. Returns (Stop seen, lease lost)."""
    stop_seen = lease_lost = False
    while not task.done():
        await asyncio.wait({task}, timeout=engine.MONITOR_INTERVAL)
        if task.done():
            break
        status = await sync_to_async(renew_lease)(session_id, owner)
        if status is None or batcher.lease_lost:
            lease_lost = True
            task.cancel()
        elif status == Status.STOPPING:
            stop_seen = True
            task.cancel()
    return stop_seen, lease_lost


@dataclass(frozen=True)
class _SummaryNeeded:
    through: int  # exchanges 1..through should be summarised before this call's prompt is sent


def _summary_tried(session: WritingSession, exchange: int) -> bool:
    """A summary call of this exchange already ended in this run (failed, refused or done): do not repeat it.
    One interrupted by a crash (incomplete) is re-run."""
    return (
        Turn.objects.filter(
            session=session, started_at__gte=session.started_at, slot__startswith=f"x{exchange}:summary:"
        )
        .exclude(status__in=(Turn.TurnStatus.STREAMING, Turn.TurnStatus.INCOMPLETE))
        .exists()
    )


def _begin(
    prepared: Prepared,
    agent: Agent,
    model: LLMModel,
    *,
    owner: str,
    summarise: bool = False,
    outbox: ev.Outbox | None = None,
) -> tuple[int, ModelRequest] | _SummaryNeeded | str:
    """Build the prompt, create the turn and reserve its worst case. Returns (turn id, request),
    _SummaryNeeded (older exchanges do not fit and a summary call should run first; only when `summarise`),
    or "too_large:<why>" / "<out of credits message>". Raises LeaseLost."""
    from orchestration.reasoning import plan_for_agent

    if isinstance(prepared.call, pipeline.StageCall):  # a pipeline stage (conversations/pipeline.py)
        return pipeline.begin(prepared, agent, model, owner=owner, outbox=outbox)
    call = prepared.call
    plan = plan_for_agent(agent, model)
    max_tokens = flow.SUMMARY_MAX_TOKENS if call.purpose == "summary" else plan.max_tokens
    try:
        prompt = _call_prompt(prepared, call, agent, model, max_tokens)
    except flow.PromptTooLarge as error:
        return f"too_large:{model.display_name}: {error}"
    if summarise and prompt.summarise_through and not _summary_tried(prepared.session, call.exchange):
        return _SummaryNeeded(prompt.summarise_through)
    start = turns.TurnStart(
        slot=call.slot,
        recipe="conversation",
        output_kind="reply" if call.purpose == "reply" else "notes",  # consult, summary
        reasoning_output=plan.output,
        notes=prompt.notes,
        input_tokens=prompt.estimated_tokens,
        max_tokens=max_tokens,
        description=f"Conversation “{prepared.conversation.title}”: {agent.name}",
        event={"purpose": call.purpose, "message_id": call.message_id, "notes": prompt.notes},
    )
    turn_id = turns.start_turn(prepared.session, agent, model, start, owner=owner, outbox=outbox)
    if isinstance(turn_id, str):
        return turn_id
    return turn_id, _call_request(prepared, call, agent, model, prompt, plan, max_tokens)


def _call_prompt(prepared: Prepared, call: flow.Call, agent: Agent, model: LLMModel, max_tokens: int) -> flow.Prompt:
    """The prompt of a triage call: the summariser's for a summary call, else the agent's. The conversation's
    summary fields are kept current by _complete. Raises flow.PromptTooLarge."""
    conversation, messages = prepared.conversation, prepared.messages or None
    if call.purpose == "summary":
        return flow.build_summary_prompt(conversation, call.summary_through, model, max_tokens, messages)
    return flow.build_prompt(conversation, agent, model, prepared.agents, call, max_tokens, messages)


def _call_request(
    prepared: Prepared,
    call: flow.Call,
    agent: Agent,
    model: LLMModel,
    prompt: flow.Prompt,
    plan: ReasoningPlan,
    max_tokens: int,
) -> ModelRequest:
    """The provider request of a triage call (no thinking and the provider's default sampling for a summary)."""
    summary = call.purpose == "summary"
    return ModelRequest(
        provider=model.provider,
        model_id=model.model_id,
        system=prompt.system,
        user=prompt.text,
        messages=prompt.messages,
        tools=prompt.tools,
        max_tokens=max_tokens,
        temperature=None if summary else agent.temperature,
        reasoning=plan.reasoning,
        thinking_budget=0 if summary else plan.thinking_budget,
        reasoning_effort=("low" if plan.reasoning == "effort" else "") if summary else plan.reasoning_effort,
        metadata={
            "session_id": prepared.session.pk,
            "recipe": "conversation",
            "agent_name": agent.name,
            "role": agent.role,
            "purpose": call.purpose,
            "project_id": prepared.conversation.project_id,
            "notes": prompt.notes,  # what was cut to fit the context window: stated under the reply
            "summary_through": call.summary_through,
        },
    )


def _summariser(prepared: Prepared) -> tuple[Agent, LLMModel]:
    """Who writes the rolling summary: the triage agent, on settings.CONVERSATION_SUMMARY_MODEL
    ("provider:model_id", an enabled catalogue model) when set, else on triage's own model."""
    from orchestration.conversations.presets import TRIAGE

    triage = next((a for a in prepared.agents if a.role == TRIAGE), prepared.agents[0])
    configured = getattr(settings, "CONVERSATION_SUMMARY_MODEL", "")
    if configured and ":" in configured:
        provider, model_id = configured.split(":", 1)
        model = LLMModel.objects.filter(provider=provider, model_id=model_id, enabled=True).first()
        if model is not None:
            return triage, model
    return triage, triage.model


async def _summarise(prepared: Prepared, through: int, *, owner: str) -> str:
    """One summary call (a Turn, reserved and settled like any call) that stores the rolling summary of
    exchanges 1..`through` on the conversation. One attempt: on failure the turn ends failed (charged for
    what it used) and the reply goes ahead with the older exchanges cut, as stated under it.
    Returns "saved", "cancelled" (the user stopped the reply), "failed" or "skipped" (no credits / no room)."""
    agent, model = await in_db_thread(_summariser, prepared)
    call = dataclasses.replace(prepared.call, agent_id=agent.pk, purpose="summary", summary_through=through)
    summary = dataclasses.replace(prepared, call=dataclasses.replace(call, message_id=None))
    begun = await db(_begin, summary, agent, model, owner=owner)
    if not isinstance(begun, tuple):
        return "skipped"
    attempt = Attempt(*begun)
    try:
        result = await _stream(summary, agent, model, attempt, owner=owner)
    except (LeaseLost, asyncio.CancelledError):
        raise
    except Exception:
        logger.exception("conversation summary turn %s crashed", attempt.turn_id)
        await sync_to_async(engine_turns.fail_turn)(
            session_id=summary.session.pk, turn_id=attempt.turn_id, text="", owner=owner
        )
        return "failed"
    if isinstance(result, str):
        return result
    detail = f"{result.user_message} The earliest exchanges are cut instead."
    await _abandon(summary, model, attempt, Turn.TurnStatus.FAILED, detail, result, owner=owner)
    return "failed"


async def _abandon(
    prepared: Prepared,
    model: LLMModel,
    attempt: Attempt,
    status: str,
    detail: str,
    error: ProviderError,
    *,
    owner: str,
) -> None:
    """End an attempt the provider failed with `status` (incomplete or failed) and `detail` on its card: its
    text and thinking kept, charged for what the provider reported, the rest of its reservation released."""
    await db(
        engine_turns.abandon_turn,
        *(prepared.session.pk, attempt.turn_id, model, attempt.text, attempt.request, status, detail, error),
        reasoning=attempt.thinking,
        owner=owner,
    )


# --- Saving what a call produced ----------------------------------------------------------------------------


def _tool_message(transcript: Transcript, prepared: Prepared, agent: Agent, tool_call: ToolCall, text: str) -> None:
    """Record one tool call: a handoff, an agent-as-tool question (pending) or an information tool's result."""
    from orchestration.conversations import tools
    from orchestration.conversations.services import tool_key

    name = tool_call.name
    data: dict[str, Any] = {"name": name, "arguments": tool_call.arguments, "call_id": tool_call.id, "text": text}
    others = {tool_key(a): a for a in prepared.agents if a.pk != agent.pk}
    if tool_call.invalid:
        data["result"] = f"The arguments were not valid JSON ({tool_call.raw[:200]!r}); nothing was run."
    elif name.startswith(tools.ASK_PREFIX) and name.removeprefix(tools.ASK_PREFIX) in others:
        target = others[name.removeprefix(tools.ASK_PREFIX)]
        data.update(agent_tool=True, agent_id=target.pk, target_name=target.name, result="")
        transcript.add(role=MessageRole.TOOL, agent=agent, status=MessageStatus.PENDING, data=data)
        return
    elif name in tools.INFO_TOOL_NAMES and tools.may_use(agent, name):  # not one it was denied on the team page
        data["result"] = tools.run_info_tool(
            name,
            tool_call.arguments,
            conversation_id=prepared.conversation.pk,
            project_id=prepared.conversation.project_id,
        )
    else:
        data["result"] = f"There is no tool called {name} here."
    transcript.add(role=MessageRole.TOOL, agent=agent, data=data)


def _handoff(
    transcript: Transcript, prepared: Prepared, agent: Agent, target: Agent, reason: str, call_id: str = ""
) -> None:
    """Record a handoff from `agent` to `target` (back to triage when `target` is the triage agent)."""
    from orchestration.conversations.presets import TRIAGE

    data = {
        "from": agent.pk,
        "to": target.pk,
        "from_name": agent.name,
        "to_name": target.name,
        "reason": reason.strip()[:300] or "no reason given",
        "back": target.role == TRIAGE,
        "call_id": call_id,
    }
    transcript.add(role=MessageRole.HANDOFF, agent=agent, data=data)


def _record_reply(
    transcript: Transcript,
    prepared: Prepared,
    agent: Agent,
    model: LLMModel,
    text: str,
    calls: list[ToolCall],
    end: StreamEnd,
    note: str = "",
) -> None:
    """The messages of a finished "reply" call: a handoff, tool calls, or the final answer."""
    from orchestration.conversations import tools
    from orchestration.conversations.services import tool_key

    call = prepared.call
    transfers = {tool_key(a): a for a in prepared.agents if a.pk != agent.pk}
    if not calls and not model.supports_tools and call.handoffs_left > 0:
        routed = flow.parse_text_handoff(text, agent, prepared.agents)
        if routed is not None:
            _handoff(transcript, prepared, agent, routed[0], routed[1])
            return
    if calls:
        handed = False
        for tool_call in calls:
            key = tool_call.name.removeprefix(tools.TRANSFER_PREFIX)
            if tool_call.name.startswith(tools.TRANSFER_PREFIX) and key in transfers and not handed:
                if call.handoffs_left > 0:
                    if text.strip():
                        transcript.add(role=MessageRole.ASSISTANT, agent=agent, content=text, data={"final": False})
                    reason = str(tool_call.arguments.get("reason") or "")
                    _handoff(transcript, prepared, agent, transfers[key], reason, tool_call.id)
                    handed = True
                    continue
                # Offered no transfer tools once capped, a model may still call one: tell it, and it answers.
                tool_call.invalid, tool_call.raw = False, ""
                data = {"name": tool_call.name, "arguments": tool_call.arguments, "call_id": tool_call.id}
                data.update(text=text, result="The handoff limit for this message is reached: answer yourself.")
                transcript.add(role=MessageRole.TOOL, agent=agent, data=data)
                continue
            _tool_message(transcript, prepared, agent, tool_call, text)
        if transcript.events:
            return
    outcome = end.outcome if not calls else "normal"
    status = {"normal": MessageStatus.COMPLETED, "truncated": MessageStatus.CUT_OFF}.get(outcome, MessageStatus.REFUSED)
    content = text if text.strip() or outcome == "normal" else (end.stop_detail or "")
    transcript.add(
        role=MessageRole.ASSISTANT,
        agent=agent,
        content=content,
        status=status,
        data={"final": True, "stop_reason": end.stop_reason, "model": model.display_name, "context_note": note},
    )


def _question(prepared: Prepared) -> Message:
    """The agent-as-tool question a "consult" call answers."""
    return Message.objects.get(pk=prepared.call.message_id or 0, conversation_id=prepared.conversation.pk)


def _record_consult(
    transcript: Transcript, prepared: Prepared, agent: Agent, text: str, calls: list[ToolCall], end: StreamEnd
) -> None:
    """A specialist's answer to an agent-as-tool question becomes that tool call's result. If it called
    information tools instead, they are recorded (under the question, `consult_of`) and the question stays
    pending: the specialist is called again with their results."""
    from orchestration.conversations import tools

    message = _question(prepared)
    if message.status != MessageStatus.PENDING:
        return
    if calls:
        for tool_call in calls:
            data: dict[str, Any] = {
                "name": tool_call.name,
                "arguments": tool_call.arguments,
                "call_id": tool_call.id,
                "text": text,
            }
            data["consult_of"] = message.pk
            if tool_call.invalid:
                data["result"] = f"The arguments were not valid JSON ({tool_call.raw[:200]!r}); nothing was run."
            elif tool_call.name in {t["name"] for t in tools.info_tools_for(agent)}:
                data["result"] = tools.run_info_tool(
                    tool_call.name,
                    tool_call.arguments,
                    conversation_id=prepared.conversation.pk,
                    project_id=prepared.conversation.project_id,
                )
            else:  # handoff and ask tools are not offered to a consulted specialist, nor tools it was not given
                data["result"] = f"There is no tool called {tool_call.name} here: answer the question."
            transcript.add(role=MessageRole.TOOL, agent=agent, data=data)
        return
    message.data["result"] = text if text.strip() else (end.stop_detail or "(no answer)")
    outcome = end.outcome
    message.status = {"normal": MessageStatus.COMPLETED, "truncated": MessageStatus.CUT_OFF}.get(
        outcome, MessageStatus.REFUSED
    )
    message.save(update_fields=["data", "status"])
    transcript.updated(message)


def _complete(
    prepared: Prepared,
    agent: Agent,
    model: LLMModel,
    attempt: Attempt,
    end: StreamEnd,
    timing: tuple[int, int | None],
    *,
    owner: str,
    outbox: ev.Outbox | None = None,
) -> str:
    """Settle the call and write its messages in one transaction, exactly once (guarded by the turn's status).
    `timing` is (latency, time to first token) in milliseconds. Returns "finished" (the final answer was
    saved and the run completed) or "saved". Raises LeaseLost."""
    if isinstance(prepared.call, pipeline.StageCall):  # a pipeline stage: recorded by conversations/pipeline.py
        return pipeline.complete(prepared, agent, model, attempt, end, timing, owner=owner, outbox=outbox)
    call, session_id, turn_id, text = prepared.call, prepared.session.pk, attempt.turn_id, attempt.text
    normal = end.outcome == "normal" or bool(attempt.calls)
    status = (
        Turn.TurnStatus.COMPLETED
        if normal
        else {"truncated": Turn.TurnStatus.TRUNCATED}.get(end.outcome, Turn.TurnStatus.REFUSED)
    )
    fields = {
        "status": status,
        "output_text": text,
        "reasoning": attempt.thinking,
        "result": {"tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in attempt.calls]},
    }
    with transaction.atomic():
        settled = turns.settle_turn(
            session_id, turn_id, model, end, timing, owner=owner, label=agent.name, fields=fields
        )
        if settled is None:
            return "saved"
        transcript = Transcript(prepared.conversation.pk, call.exchange, turn_id)
        _record_call(transcript, prepared, call, agent, model, attempt, text, status, end)
        events = turns.finished_events(settled, turn_id, status, end, transcript)
        # The final answer completes the run here, in the same transaction (no separate planning round trip);
        # a run being stopped is left to _prepare, which finishes the stop.
        session = settled.session
        finished = transcript.final and session.status == Status.RUNNING
        if finished and set_status(session, Status.COMPLETED, finished_at=timezone.now()):
            events.append(ev.NewEvent("status", status_payload(session)))
        ev.append_events(session_id=session_id, events=events, outbox=outbox)
    return "finished" if finished else "saved"


def _record_call(
    transcript: Transcript,
    prepared: Prepared,
    call: flow.Call,
    agent: Agent,
    model: LLMModel,
    attempt: Attempt,
    text: str,
    status: str,
    end: StreamEnd,
) -> None:
    """What a settled triage call leaves: a summary stored on the conversation, a consulted specialist's
    answer, or the reply's messages (handoff, tool calls, final answer)."""
    if call.purpose == "summary":
        if text.strip() and status != Turn.TurnStatus.REFUSED:  # a refusal leaves the cut as the fallback
            Conversation.objects.filter(pk=prepared.conversation.pk).update(
                summary=text.strip(), summary_through=call.summary_through
            )
            prepared.conversation.summary = text.strip()  # the drive's copy, read by the next prompt
            prepared.conversation.summary_through = call.summary_through
    elif call.purpose == "consult":
        _record_consult(transcript, prepared, agent, text, attempt.calls, end)
    else:
        note = " ".join(attempt.request.metadata.get("notes") or [])
        _record_reply(transcript, prepared, agent, model, text, attempt.calls, end, note)


def _stopped(
    prepared: Prepared, agent: Agent, model: LLMModel, attempt: Attempt, *, owner: str, outbox: ev.Outbox | None = None
) -> None:
    """The user pressed Stop: the call is charged for what it used and its text so far is kept, marked stopped."""
    if isinstance(prepared.call, pipeline.StageCall):
        pipeline.stopped(prepared, agent, model, attempt, owner=owner, outbox=outbox)
        return
    call, text = prepared.call, attempt.text
    with transaction.atomic():
        if not turns.stop_turn(prepared, model, attempt, owner=owner, outbox=outbox):
            return
        transcript = Transcript(prepared.conversation.pk, call.exchange, attempt.turn_id)
        if call.purpose == "consult":
            message = _question(prepared)
            message.status, message.data["result"] = MessageStatus.STOPPED, text
            message.save(update_fields=["status", "data"])
            transcript.updated(message)
        else:
            transcript.add(
                role=MessageRole.ASSISTANT,
                agent=agent,
                content="" if call.purpose == "summary" else text,
                status=MessageStatus.STOPPED,
                data={"final": True, "stop_reason": "user_stopped", "model": model.display_name},
            )
        ev.append_events(session_id=prepared.session.pk, events=transcript.events, outbox=outbox)


def _fail_reply(
    session_id: int, error: str, *, owner: str, out_of_credits: bool = False, outbox: ev.Outbox | None = None
) -> None:
    """End the reply with a note saying why (kept in the transcript) and mark the run failed."""
    with transaction.atomic():
        fence(session_id, owner)
        session = WritingSession.objects.select_for_update().get(pk=session_id)
        conversation = Conversation.objects.get(session_id=session_id)
        last_user = conversation.messages.filter(role=MessageRole.USER, superseded=False).order_by("-position").first()
        transcript = Transcript(conversation.pk, last_user.exchange if last_user else 0, None)
        transcript.add(
            role=MessageRole.NOTE,
            agent=None,
            content=error,
            status=MessageStatus.FAILED,
            data={"final": True, "kind": "out_of_credits" if out_of_credits else "failed"},
        )
        reason = StopReason.OUT_OF_CREDITS if out_of_credits else StopReason.ERROR
        if set_status(session, Status.FAILED, stop_reason=reason, stop_detail=error[:2000], finished_at=timezone.now()):
            transcript.events.append(ev.NewEvent("status", status_payload(session)))
        ev.append_events(session_id=session_id, events=transcript.events, outbox=outbox)
