"""The pipeline flow of a conversation: each user message runs research -> plan -> build -> review.

A policy over persisted state, like the triage flow (`flow.next_move`): the current exchange's "stage"
messages say which stages are done (each names the turn that produced it), so a reply cut anywhere (a
worker SIGKILLed mid-stage, a retry, a stop) is re-planned from what was saved and no stage is run or
charged twice. The runner (`runner.py`) drives the calls (lease, retries, fallback model, Stop, streaming)
and hands the three stage-specific steps to this module: `begin` (prompt, turn, reservation), `complete`
(settle, parse, write the stage's messages in one transaction, guarded by the turn's status) and
`stopped`.

Nothing of the session pipeline is copied: the stages use its prompt recipes (`flows/recipes.py`), its
material (`flows/pipeline.material`: numbered source passages, the earlier stages' output, the builder's
settings line), its passage search (`flows/pipeline.find_passages` over the project's references with the
shared retriever), its reply parsing (`flows.parse_result`: findings and citations, the outline's sections,
the reviewer's flags and find/replace edits applied by `flows/merge.py`) and its shipped team's prompts and
rubrics (the "Researched article" preset). What differs is the brief: the writer's message, followed by the
conversation so far (the newest earlier exchanges that fit a quarter of the model's context window).

The reply is the reviewed text: the builder's draft with the reviewer's applicable edits merged, with the
sources it cites listed under it. Each stage is a Turn of the conversation's hidden run (reserved before,
settled after, like any call) and shows as a compact, expandable stage line in the chat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction

from orchestration import events as ev
from orchestration import turns as engine_turns
from orchestration.conversations import flow, turns
from orchestration.conversations.models import Conversation, Message, MessageRole, MessageStatus
from orchestration.conversations.turns import Attempt, Prepared, Transcript
from orchestration.flows.base import AgentCall, Recipe
from orchestration.flows.pipeline import BUILDER, PLANNER, RESEARCHER, REVIEWER
from orchestration.models import Agent, LLMModel, Turn, WritingSession
from orchestration.providers.base import ModelRequest
from orchestration.tokens import estimate_tokens

if TYPE_CHECKING:
    from orchestration.prompts import PromptParts
    from orchestration.providers.base import StreamEnd
    from orchestration.reasoning import ReasoningPlan

PIPELINE_ROLES = (RESEARCHER, PLANNER, BUILDER, REVIEWER)
# (stage key, recipe, role, label shown in the chat), in order.
STAGES = (
    ("research", Recipe.RESEARCH, RESEARCHER, "Research"),
    ("plan", Recipe.OUTLINE, PLANNER, "Plan"),
    ("build", Recipe.BUILD, BUILDER, "Build"),
    ("review", Recipe.REVIEW, REVIEWER, "Review"),
)
STAGE_LABELS: dict[str, str] = {str(recipe): label for _, recipe, _, label in STAGES}
HISTORY_SHARE = 0.25  # of the model's context window, at most, for the conversation so far


@dataclass(frozen=True)
class StageCall:
    """One stage of the current reply: `agent_id` runs `recipe` reading the earlier stages' turns
    (`inputs`) and, for research, the retrieved passages (`passages`, numbered [1], [2]... in order).
    Shares the fields of flow.Call the runner reads (purpose, exchange, slot, message_id...)."""

    agent_id: int
    exchange: int
    stage: str
    recipe: str
    inputs: tuple[int, ...] = ()
    passages: tuple[int, ...] = ()
    purpose: str = "stage"
    message_id: int | None = None
    handoffs_left: int = 0
    tool_calls_left: int = 0
    summary_through: int = 0  # unused: the stages' brief fits the conversation itself (conversation_brief)

    @property
    def slot(self) -> str:
        return f"x{self.exchange}:{self.stage}"[:40]

    @property
    def label(self) -> str:
        return STAGE_LABELS.get(self.recipe, self.stage.title())


def stage_label(recipe: str) -> str:
    """The chat's name for a turn's stage ("Research", "Plan", "Build", "Review"), or "" for other turns."""
    return STAGE_LABELS.get(recipe, "")


def team_by_role(agents: list[Agent]) -> dict[str, Agent]:
    """The first active agent of each pipeline role."""
    found: dict[str, Agent] = {}
    for agent in sorted(agents, key=lambda a: (a.order, a.pk)):
        if agent.role in PIPELINE_ROLES and agent.role not in found:
            found[agent.role] = agent
    return found


def _config(session: WritingSession) -> dict[str, Any]:
    from orchestration.flows.pipeline import DEFAULT_CONFIG, ConfigError, clean_config

    try:
        return clean_config(session.flow_config)
    except ConfigError:
        return dict(DEFAULT_CONFIG)


def research_query(conversation: Conversation, user_message: Message) -> str:
    """What the research stage searches the references for: the message, and the writer's previous message
    (a follow-up such as "and in winter?" keeps its subject)."""
    previous = (
        conversation.messages.filter(role=MessageRole.USER, superseded=False, exchange__lt=user_message.exchange)
        .order_by("-position")
        .values_list("content", flat=True)
        .first()
    )
    return f"{user_message.content}\n{previous or ''}".strip()


def next_move(conversation: Conversation, agents: list[Agent], calls_so_far: int) -> StageCall | flow.Done:
    """The next stage of the current reply, or Done when it is answered (the review wrote the final reply, or
    a stage ended it: stopped, cut off, refused, failed). Reads only the database (and the retriever)."""
    from orchestration.flows.pipeline import find_passages

    messages = list(conversation.messages.filter(superseded=False).order_by("position"))
    users = [m for m in messages if m.role == MessageRole.USER]
    team = team_by_role(agents)
    if not users or len(team) < len(PIPELINE_ROLES):
        return flow.Done("nothing_to_answer")
    last = users[-1]
    entries = [m for m in messages if m.position > last.position]
    if any(m.data.get("final") for m in entries if m.role in (MessageRole.ASSISTANT, MessageRole.NOTE, "stage")):
        return flow.Done("answered")
    if calls_so_far >= flow.MAX_CALLS:
        return flow.Done("too_many_calls")
    done = {
        m.data.get("stage"): m.turn_id
        for m in entries
        if m.role == MessageRole.STAGE and m.status == MessageStatus.COMPLETED and m.turn_id
    }
    research, plan, build = done.get("research"), done.get("plan"), done.get("build")
    if research is None:
        k = _config(conversation.session)["passages"]
        passages = find_passages(research_query(conversation, last), k=k, project=conversation.project_id)
        return StageCall(team[RESEARCHER].pk, last.exchange, "research", Recipe.RESEARCH, passages=passages)
    if plan is None:
        return StageCall(team[PLANNER].pk, last.exchange, "plan", Recipe.OUTLINE, inputs=(research,))
    if build is None:
        return StageCall(team[BUILDER].pk, last.exchange, "build", Recipe.BUILD, inputs=(research, plan))
    if done.get("review") is None:
        return StageCall(team[REVIEWER].pk, last.exchange, "review", Recipe.REVIEW, inputs=(build, research))
    return flow.Done("answered")


# --- Prompts ------------------------------------------------------------------------------------------------


def conversation_brief(conversation: Conversation, user_message: Message, budget_tokens: int) -> tuple[str, list[str]]:
    """The stages' brief: the writer's message, then the conversation so far (each earlier exchange as the
    writer's message and the final reply), newest kept within `budget_tokens`. Returns (brief, notes), the
    notes saying how many earlier exchanges were left out."""
    history = flow.history_messages(conversation, user_message.exchange)
    budget = budget_tokens - estimate_tokens(user_message.content)
    kept: list[str] = []
    for _number, exchange in reversed(history):
        lines = [
            ("Writer: " if m["role"] == "user" else "Reply: ") + str(m.get("content") or "").strip() for m in exchange
        ]
        text = "\n".join(lines)
        cost = estimate_tokens(text)
        if cost > budget:
            break
        budget -= cost
        kept.insert(0, text)
    notes = []
    left_out = len(history) - len(kept)
    if left_out:
        notes.append(
            f"The {left_out} earliest exchange{'s were' if left_out != 1 else ' was'} left out to fit the model's "
            "context window; the stages see the newer ones."
        )
    brief = user_message.content.strip()
    if kept:
        brief += (
            "\n\n## The conversation so far (oldest first)\n"
            "Answer the writer's message above; this earlier conversation is its context.\n\n" + "\n\n".join(kept)
        )
    return brief, notes


def _body(turn: Turn | None) -> str:
    from orchestration.flows.pipeline import _reply_body

    return _reply_body(turn) if turn is not None else ""


def build_stage_prompt(
    conversation: Conversation, agent: Agent, model: LLMModel, call: StageCall, max_tokens: int
) -> tuple[PromptParts, str]:
    """The stage's prompt (orchestration.prompts.PromptParts), built exactly as a pipeline session's call is
    (its recipe, material and rubric), with the conversation as the brief. Raises prompts.PromptTooLarge."""
    from orchestration.flows import recipe_text
    from orchestration.flows.pipeline import material
    from orchestration.prompts import PromptInputs, build_prompt

    session = conversation.session
    user_message = (
        conversation.messages.filter(role=MessageRole.USER, superseded=False, exchange=call.exchange)
        .order_by("-position")
        .first()
    )
    if user_message is None:
        raise flow.PromptTooLarge("There is no message to answer.")
    recipe = recipe_text(call.recipe)
    stage = material(
        session,
        AgentCall(agent.pk, slot=call.slot, recipe=call.recipe, inputs=call.inputs, passages=call.passages),
    )
    document = ""
    if call.recipe == Recipe.REVIEW:  # the reviewer reads the builder's draft as the document
        document = _body(Turn.objects.filter(pk=call.inputs[0]).first() if call.inputs else None)
    brief, notes = conversation_brief(conversation, user_message, int(model.context_window * HISTORY_SHARE))
    prompt = build_prompt(
        PromptInputs(
            role_prompt=agent.role_prompt,
            agent_name=agent.name,
            role=agent.role,
            criteria=[(c.name, c.description, c.weight) for c in agent.criteria.all()],
            brief=brief,
            references=stage.references,
            document=document,
            feedback=stage.feedback,
            human_note="",
            round_number=1,
            max_rounds=1,
            context_window=model.context_window,
            max_output_tokens=max_tokens,
            flow_rules=recipe.rules,
            evaluation_lead=recipe.evaluation_lead,
            feedback_heading=recipe.inputs_heading,
            instruction=stage.instruction or recipe.instruction,
            no_document=recipe.no_document,
            show_document=recipe.show_document,
        )
    )
    prompt.notes = notes + prompt.notes
    return prompt, brief


# --- The runner's three stage steps ----------------------------------------------------------------------------


def begin(
    prepared: Prepared, agent: Agent, model: LLMModel, *, owner: str, outbox: ev.Outbox | None
) -> tuple[int, ModelRequest] | str:
    """Build the stage's prompt, create its turn and reserve its worst case (as runner._begin does for a
    triage call). Returns (turn id, request), or "too_large:<why>" / the out-of-credits message.
    Raises LeaseLost."""
    from orchestration.prompts import PromptTooLarge
    from orchestration.reasoning import plan_for_agent

    call = _stage(prepared)
    plan = plan_for_agent(agent, model)
    conversation = Conversation.objects.select_related("project", "session").get(pk=prepared.conversation.pk)
    try:
        prompt, brief = build_stage_prompt(conversation, agent, model, call, plan.max_tokens)
    except (PromptTooLarge, flow.PromptTooLarge) as error:
        return f"too_large:{model.display_name}: {error}"
    start = turns.TurnStart(
        slot=call.slot,
        recipe=call.recipe,
        output_kind="document" if call.recipe in (Recipe.BUILD, Recipe.REVIEW) else "notes",
        reasoning_output=plan.output,
        notes=prompt.notes,
        input_tokens=prompt.estimated_input_tokens,
        max_tokens=plan.max_tokens,
        description=f"Conversation “{conversation.title}”: {call.label} ({agent.name})",
        event={
            "purpose": "stage",
            "stage": call.stage,
            "label": call.label,
            "message_id": None,
            "notes": prompt.notes,
        },
    )
    turn_id = turns.start_turn(prepared.session, agent, model, start, owner=owner, outbox=outbox)
    if isinstance(turn_id, str):
        return turn_id
    return turn_id, _stage_request(conversation, call, agent, model, prompt, plan, brief)


def _stage(prepared: Prepared) -> StageCall:
    """The prepared call, a stage (the runner hands this module only stage calls)."""
    if not isinstance(prepared.call, StageCall):
        raise TypeError(f"not a pipeline stage: {prepared.call!r}")
    return prepared.call


def _stage_request(
    conversation: Conversation,
    call: StageCall,
    agent: Agent,
    model: LLMModel,
    prompt: PromptParts,
    plan: ReasoningPlan,
    brief: str,
) -> ModelRequest:
    """The provider request of a stage: its prompt, the agent's sampling and thinking settings, and the
    metadata the Demo provider reads to answer it as the session pipeline's stage."""
    metadata = {
        "session_id": conversation.session_id,
        "round": 1,
        "recipe": call.recipe,  # the Demo provider answers it as the session pipeline's stage
        "slot": call.slot,
        "agent_name": agent.name,
        "role": agent.role,
        "criteria": [c.name for c in agent.criteria.all()],
        "brief": brief,
        "purpose": "stage",
        "project_id": conversation.project_id,
        "notes": prompt.notes,
    }
    return engine_turns.request_for(model, agent, prompt, plan, metadata)


def _cited(sources: list[dict[str, Any]], numbers: list[int]) -> list[dict[str, Any]]:
    wanted = set(numbers)
    return [{k: s.get(k) for k in ("n", "title", "ordinal", "heading")} for s in sources if s.get("n") in wanted]


def _stage_view(recipe: str, body: str, result: dict[str, Any], overall: float | None) -> tuple[str, str]:
    """(content shown when the stage line is expanded, its one-line summary)."""
    if recipe == Recipe.RESEARCH:
        findings, sources = result.get("findings") or [], result.get("sources") or []
        cited = ", ".join(f"[{n}]" for n in result.get("cited") or [])
        summary = (
            f"{len(findings)} finding{'s' if len(findings) != 1 else ''} from {len(sources)} "
            f"passage{'s' if len(sources) != 1 else ''}" + (f", citing {cited}" if cited else "")
        )
        return body, summary
    if recipe == Recipe.OUTLINE:
        sections = result.get("sections") or []
        lines = [f"# {result['title']}"] if result.get("title") else []
        lines += [f"{i}. **{s.get('title', '')}**: {s.get('goal', '')}" for i, s in enumerate(sections, start=1)]
        titles = ", ".join(str(s.get("title", "")) for s in sections[:5])
        summary = f"{len(sections)} section{'s' if len(sections) != 1 else ''}" + (f": {titles}" if titles else "")
        return ("\n".join(lines) or body), summary
    if recipe == Recipe.BUILD:
        cited = ", ".join(f"[{n}]" for n in result.get("cited") or [])
        return body, f"a {len(body.split())}-word draft" + (f" citing {cited}" if cited else "")
    # review
    edits, flags = result.get("edits") or [], result.get("flags") or []
    lines = [result.get("comments") or ""]
    lines += [f"- ⚑ {f.get('kind', 'other')}: {f.get('note', '')}" for f in flags]
    lines += [
        f"- {'✓ applied' if e.get('applied') else '✗ not applied'}: “{e.get('find', '')}” → “{e.get('replace', '')}”"
        + (f" ({e.get('why_not')})" if e.get("why_not") else "")
        for e in edits
    ]
    score = f"scored {overall:.1f}; " if overall is not None else ""
    applied = result.get("applied", 0)
    summary = f"{score}{applied} of {len(edits)} edit{'s' if len(edits) != 1 else ''} applied, {len(flags)} flagged"
    return "\n".join(line for line in lines if line).strip(), summary


def complete(
    prepared: Prepared,
    agent: Agent,
    model: LLMModel,
    attempt: Attempt,
    end: StreamEnd,
    timing: tuple[int, int | None],
    *,
    owner: str,
    outbox: ev.Outbox | None,
) -> str:
    """Settle the stage and write its messages in one transaction, exactly once (guarded by the turn's status):
    the stage line, and after the review the final reply (the reviewed text and the sources it cites). A stage
    cut off or refused ends the reply with its line marked so. `timing` is (latency, time to first token) in
    milliseconds. Returns "saved" (the runner's next planning step completes the run once the reply is final).
    Raises LeaseLost."""
    from orchestration.evaluation import Evaluation, split_reasoning
    from orchestration.flows import parse_result

    call, turn_id = _stage(prepared), attempt.turn_id
    answer, thinking = split_reasoning(attempt.text)
    normal = end.outcome == "normal"
    if normal:
        criteria = [(c.name, c.weight) for c in agent.criteria.all()]
        document, evaluation, result = parse_result(call.recipe, answer, criteria, call.inputs, call.passages)
        status = Turn.TurnStatus.COMPLETED
    else:
        document, evaluation, result = "", Evaluation(raw=""), {}
        status = {"truncated": Turn.TurnStatus.TRUNCATED}.get(end.outcome, Turn.TurnStatus.REFUSED)
    fields = {
        "status": status,
        "output_text": answer,
        "reasoning": "\n\n".join(part for part in (attempt.thinking, thinking) if part),
        "result": result,
        "scores": evaluation.scores,
        "overall_score": evaluation.overall,
        "parse_tier": evaluation.tier if normal else "",
        "evaluation_raw": evaluation.raw[:20000],
    }
    with transaction.atomic():
        label = f"{call.label} ({agent.name})"
        settled = turns.settle_turn(
            prepared.session.pk, turn_id, model, end, timing, owner=owner, label=label, fields=fields
        )
        if settled is None:  # saved by an earlier run of this stage
            return "saved"
        transcript = Transcript(prepared.conversation.pk, call.exchange, turn_id)
        note = " ".join(attempt.request.metadata.get("notes") or [])
        stage = _Stage(call, answer, document, result, evaluation.overall)
        _record(transcript, prepared, agent, model, stage, end, note)
        events = turns.finished_events(settled, turn_id, status, end, transcript)
        ev.append_events(session_id=prepared.session.pk, events=events, outbox=outbox)
    return "saved"


@dataclass(frozen=True)
class _Stage:
    """A settled stage's reply: the answer, the document it produced (build, review), the flow's parsed
    result and the reviewer's overall score (None when not scored)."""

    call: StageCall
    answer: str
    document: str
    result: dict[str, Any]
    overall: float | None


def _record(
    transcript: Transcript,
    prepared: Prepared,
    agent: Agent,
    model: LLMModel,
    stage: _Stage,
    end: StreamEnd,
    note: str,
) -> None:
    """The messages of a settled stage: its line (marked ended early when cut off or refused), and after the
    review the reply: the builder's draft with the reviewer's applicable edits merged, and the sources it cites."""
    call, answer, document, result, overall = stage.call, stage.answer, stage.document, stage.result, stage.overall
    if end.outcome != "normal":
        status = MessageStatus.CUT_OFF if end.outcome == "truncated" else MessageStatus.REFUSED
        transcript.add(
            role=MessageRole.STAGE,
            agent=agent,
            content=answer if answer.strip() else (end.stop_detail or ""),
            status=status,
            data={"stage": call.stage, "label": call.label, "summary": "ended early", "final": True},
        )
        return
    body = document if call.recipe == Recipe.BUILD else answer
    if call.recipe in (Recipe.RESEARCH, Recipe.OUTLINE):
        from orchestration.evaluation import parse_reply

        body = parse_reply(answer, [])[0].strip()
    content, summary = _stage_view(call.recipe, body, result, overall)
    transcript.add(
        role=MessageRole.STAGE,
        agent=agent,
        content=content,
        data={"stage": call.stage, "label": call.label, "summary": summary, "final": False, "score": overall},
    )
    if call.recipe != Recipe.REVIEW:
        return
    # The reply: the builder's draft with the reviewer's applicable edits merged, and the sources it cites.
    research = Turn.objects.filter(pk__in=call.inputs, recipe=Recipe.RESEARCH).values_list("result", flat=True)
    sources = next(iter(research), None) or {}
    reply = document.strip() or _body(Turn.objects.filter(pk=call.inputs[0]).first())
    builder = next((a for a in prepared.agents if a.role == BUILDER), agent)
    transcript.add(
        role=MessageRole.ASSISTANT,
        agent=builder,
        content=reply,
        data={
            "final": True,
            "stop_reason": end.stop_reason,
            "model": model.display_name,
            "context_note": note,
            "sources": _cited(sources.get("sources") or [], _citations(reply)),
            "reviewed_by": agent.name,
            "applied": result.get("applied", 0),
        },
    )


def _citations(text: str) -> list[int]:
    from orchestration.flows.merge import citations_in

    return list(citations_in(text))


def stopped(
    prepared: Prepared, agent: Agent, model: LLMModel, attempt: Attempt, *, owner: str, outbox: ev.Outbox | None
) -> None:
    """The user pressed Stop mid-stage: the stage is charged for what it used, its text so far is kept on its
    line (marked stopped) and the reply ends there. Raises LeaseLost."""
    call = _stage(prepared)
    with transaction.atomic():
        if not turns.stop_turn(prepared, model, attempt, owner=owner, outbox=outbox):
            return
        transcript = Transcript(prepared.conversation.pk, call.exchange, attempt.turn_id)
        transcript.add(
            role=MessageRole.STAGE,
            agent=agent,
            content=attempt.text,
            status=MessageStatus.STOPPED,
            data={"stage": call.stage, "label": call.label, "summary": "stopped by you", "final": True},
        )
        ev.append_events(session_id=prepared.session.pk, events=transcript.events, outbox=outbox)
