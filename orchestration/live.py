"""What the live session page shows: its context, and the fragments pushed over the WebSocket.

The page and the consumer render the same partial templates from the database, so a reload,
a reconnect and a live push all show exactly the same thing.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString

from orchestration import documents, live_plan
from orchestration import events as ev
from orchestration.evaluation import split_output
from orchestration.live_markdown import streaming_html
from orchestration.live_plan import PLAN_EVENT_KINDS
from orchestration.matching import deadline_in
from orchestration.models import DocumentVersion, Turn, WritingSession, turn_reservation_key
from orchestration.reasoning import output_label
from orchestration.rendering import render_markdown
from orchestration.services import MAX_CONTINUE_ROUNDS

if TYPE_CHECKING:
    from orchestration.live_flows import ReviewCache

TURN_TEMPLATE = "orchestration/partials/live_turn.html"
ROUND_TEMPLATE = "orchestration/partials/live_round.html"
HEADER_TEMPLATE = "orchestration/partials/live_header.html"
CHART_TEMPLATE = "orchestration/partials/live_chart.html"

TURN_FIELDS = (
    "id", "round", "agent_id", "agent_name", "attempt", "kind", "status", "model_used", "output_text", "scores",
    "overall_score", "parse_tier", "input_tokens", "cached_tokens", "output_tokens", "credits", "latency_ms",
    "ttft_ms", "error", "prompt_notes", "started_at", "finished_at", "feedback", "reasoning", "reasoning_tokens",
    "reasoning_output", "cache_write_tokens", "usage_estimated", "stop_reason",
    "slot", "recipe", "output_kind", "result", "session",
)  # fmt: skip

# The start of an evaluation tag cut by a chunk boundary ("<", "<eval", "< evaluation"): while a turn
# streams, the page must not show it for a moment and then take it back.
_PARTIAL_EVAL_TAG = re.compile(r"<\s*(?:e(?:v(?:a(?:l(?:u(?:a(?:t(?:i(?:o(?:n)?)?)?)?)?)?)?)?)?)?\s*\Z", re.IGNORECASE)

# A compact diff shows this many words (and the spaces between them) around each change.
CONTEXT_TOKENS = 12
MAX_HUNKS = 8


def streaming_document(text: str) -> str:
    """The document part of a reply that is still arriving: everything before its evaluation.

    The evaluation (scores and feedback, `<evaluation>` block or one of the other forms that
    `evaluation.split_output` recognises) is shown as readable text once the turn is finished,
    never as the raw block while it streams.
    """
    return split_output(_PARTIAL_EVAL_TAG.sub("", text or ""))[0]


def turn_body_html(turn: Turn, streamed: str | None = None) -> str:
    if turn.status == Turn.TurnStatus.STREAMING:
        return streaming_html(turn.pk, streaming_document(streamed or ""))
    if turn.kind == Turn.Kind.HUMAN:
        return render_markdown(turn.output_text)
    document, _ = split_output(turn.output_text)
    return render_markdown(document)


@dataclass
class TurnChanges:
    """What one turn did to the document, for its card: a compact word diff against the version before."""

    kind: str  # "first" (no earlier text), "changed", "unchanged", "none" (the turn made no version)
    version: int | None = None
    words: int = 0
    added: int = 0
    removed: int = 0
    html: SafeString | str = ""
    more_hunks: int = 0


def compact_diff(
    old: str, new: str, *, context: int = CONTEXT_TOKENS, max_hunks: int = MAX_HUNKS
) -> tuple[SafeString, int]:
    """(html, changes left out): the changed words of old -> new with a little context, gaps elided.

    Tokens are escaped before they are wrapped in <ins>/<del>, and the result goes through the
    document panel's diff sanitizer as well, so model text can never become markup here.
    """
    old_tokens, new_tokens = documents._tokens(old), documents._tokens(new)
    opcodes = documents._word_opcodes(old_tokens, new_tokens, deadline_in())
    changes = [i for i, op in enumerate(opcodes) if op[0] != "equal"]
    shown = set(changes[:max_hunks])
    parts: list[str] = []
    gap = str(format_html('<span class="diff-gap">{}</span>', " … "))

    def add_gap() -> None:
        if not parts or parts[-1] != gap:
            parts.append(gap)

    for index, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag != "equal":
            if index not in shown:
                add_gap()
                continue
            if tag in ("delete", "replace"):
                parts.append(str(format_html("<del>{}</del>", "".join(old_tokens[i1:i2]))))
            if tag in ("insert", "replace"):
                parts.append(str(format_html("<ins>{}</ins>", "".join(new_tokens[j1:j2]))))
            continue
        run = old_tokens[i1:i2]
        after, before = index - 1 in shown, index + 1 in shown
        head = context if after else 0
        tail = context if before else 0
        if head + tail >= len(run):
            parts.append(str(escape("".join(run))))
            continue
        if head:
            parts.append(str(escape("".join(run[:head]))))
        add_gap()
        if tail:
            parts.append(str(escape("".join(run[-tail:]))))
    # Every part was escaped or built with format_html above; the sanitizer is a second line of defence.
    return documents._sanitize_diff("".join(parts)), max(0, len(changes) - max_hunks)


def turn_changes(version: DocumentVersion | None, previous_content: str | None) -> TurnChanges:
    """Summarise a finished turn as its changes. `previous_content` is the version before (None: none)."""
    if version is None:
        return TurnChanges(kind="none")
    new = version.content
    words = len(new.split())
    if not previous_content:
        return TurnChanges(kind="first", version=version.number, words=words, added=words)
    if previous_content == new:
        return TurnChanges(kind="unchanged", version=version.number, words=words)
    stats = documents.diff_stats(previous_content, new)
    html, more = compact_diff(previous_content, new)
    return TurnChanges(
        kind="changed", version=version.number, words=words, added=stats["added"], removed=stats["removed"],
        html=html, more_hunks=more,
    )  # fmt: skip


def _changes_by_turn(session_id: int, turns: list[Turn]) -> dict[int, TurnChanges]:
    """What each finished turn in `turns` did to the document, from one query over the session's versions.

    A turn that made a version is diffed against the version before it. A finished agent turn that made
    none returned the document as it was (the engine saves no version for an unchanged text): it says so.
    """
    finished = [t for t in turns if t.status != Turn.TurnStatus.STREAMING]
    if not finished:
        return {}
    versions = list(
        DocumentVersion.objects.filter(session_id=session_id).only("number", "content", "turn_id").order_by("number")
    )
    made: dict[int, tuple[DocumentVersion, str | None]] = {}
    # (turn id, content) in the order the document changed; the starting document (v1 without a turn) first.
    history: list[tuple[int, str]] = []
    previous: str | None = None
    for version in versions:
        if version.turn_id:
            made[version.turn_id] = (version, previous)
            history.append((version.turn_id, version.content))
        elif version.number == 1:
            history.append((0, version.content))
        previous = version.content
    changes: dict[int, TurnChanges] = {}
    for turn in finished:
        if turn.pk in made:
            changes[turn.pk] = turn_changes(*made[turn.pk])
        elif turn.kind == Turn.Kind.AGENT and turn.status == Turn.TurnStatus.COMPLETED:
            before = next((content for turn_id, content in reversed(history) if turn_id < turn.pk), None)
            document, _ = split_output(turn.output_text)
            if before is not None and document.strip() == before.strip():
                changes[turn.pk] = TurnChanges(kind="unchanged", words=len(before.split()))
    return changes


def reasoning_html(text: str) -> str:
    """The model's thinking as escaped plain text (shown with pre-wrap): never rendered as Markdown."""
    return escape(text.strip("\n"))


def _turn_context(
    turn: Turn,
    streamed: str | None,
    changes: TurnChanges | None = None,
    thought: str | None = None,
    earlier: list[Turn] | None = None,
    *,
    flow: str = "",
    cache: ReviewCache | None = None,
) -> dict[str, Any]:
    """A card's context. `thought` is the reasoning streamed so far (for a streaming turn); `earlier` the
    interrupted or failed attempts of the same call, shown folded inside this card; `flow` adds what a
    parallel-flow card shows (issues, decisions) via live_flows."""
    from orchestration import live_flows

    if turn.status != Turn.TurnStatus.STREAMING:
        thought = turn.reasoning
    critique = live_flows.critique_body_html(turn, cache)
    return {
        "turn": turn,
        "body_html": critique if critique is not None else turn_body_html(turn, streamed),
        "changes": changes or TurnChanges(kind="none"),
        "review": live_flows.review_context(turn, flow, cache) if flow else None,
        "phase": live_flows.phase_of(turn.slot) if turn.slot else "",
        "reasoning_html": reasoning_html(thought or ""),
        "reasoning_label": output_label(turn.reasoning_output),
        "earlier_attempts": earlier or [],
    }


def _attempt_key(turn: Turn) -> tuple[int, int, str] | None:
    """Attempts of one call share (round, agent, slot); human turns are never collapsed."""
    return (turn.round, turn.agent_id, turn.slot) if turn.kind == Turn.Kind.AGENT and turn.agent_id else None


def collapse_attempts(turns: list[Turn]) -> tuple[list[Turn], dict[int, list[Turn]]]:
    """Keep the latest attempt of each call; the earlier ones go under it ("attempt 3 of 3").

    Returns (the turns to show as cards, in order; {shown turn id: its earlier attempts, oldest first}).
    """
    latest: dict[tuple[int, int, str], Turn] = {}
    for turn in turns:
        key = _attempt_key(turn)
        if key is not None and (key not in latest or turn.attempt > latest[key].attempt):
            latest[key] = turn
    shown: list[Turn] = []
    earlier: dict[int, list[Turn]] = {}
    for turn in turns:
        key = _attempt_key(turn)
        if key is None or latest[key] is turn:
            shown.append(turn)
    for turn in turns:
        key = _attempt_key(turn)
        if key is not None and latest[key] is not turn:
            earlier.setdefault(latest[key].pk, []).append(turn)
    for attempts in earlier.values():
        attempts.sort(key=lambda t: t.attempt)
    return shown, earlier


@dataclass
class ActiveTime:
    """Time agents spent writing: the union of the turns' intervals (parallel turns counted once).

    Paused, queued and idle time is not counted. While a turn streams, `running_since` is the start of
    the open interval and the page adds the time since then to `seconds` (static/js/live_view.js).
    """

    seconds: int
    running_since: dt.datetime | None

    @property
    def label(self) -> str:
        return duration_label(self.seconds)


def duration_label(seconds: int) -> str:
    """ "45s", "2m 05s", "1h 03m": the same format the page's ticking clock writes."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def active_time(intervals: list[tuple[dt.datetime, dt.datetime | None]], now: dt.datetime | None = None) -> ActiveTime:
    """ActiveTime from (started_at, finished_at or None while streaming) pairs."""
    now = now or timezone.now()
    spans = sorted((start, end or now, end is None) for start, end in intervals if start)
    total = 0.0
    open_start: dt.datetime | None = None
    current: list[Any] | None = None  # [start, end, open]
    for start, end, is_open in spans:
        if current and start <= current[1]:
            current[1] = max(current[1], end)
            current[2] = current[2] or is_open
            continue
        if current:
            total += (current[1] - current[0]).total_seconds()
        current = [start, end, is_open]
    if current:
        if current[2]:
            open_start = current[0]
        else:
            total += (current[1] - current[0]).total_seconds()
    return ActiveTime(seconds=int(total), running_since=open_start)


def session_active_time(session_id: int) -> ActiveTime:
    rows = Turn.objects.filter(session_id=session_id, kind=Turn.Kind.AGENT).values_list(
        "started_at", "finished_at", "status"
    )
    return active_time([(start, None if status == Turn.TurnStatus.STREAMING else end) for start, end, status in rows])


@dataclass
class Chart:
    width: int
    height: int
    rounds: int
    series: list[dict[str, Any]]
    y_ticks: list[dict[str, Any]]
    x_ticks: list[dict[str, Any]]


# The turn fields score_chart reads.
CHART_FIELDS = ("id", "kind", "agent_name", "round", "overall_score", "status")


def score_chart(turns: list[Turn], max_rounds: int) -> Chart | None:
    """Overall score per agent across rounds, laid out for an inline SVG (no JS library). Reads only `CHART_FIELDS`
    of `turns`."""
    width, height, pad = 560, 200, 32
    per_agent: dict[str, dict[int, float]] = OrderedDict()
    for turn in turns:
        if turn.kind == Turn.Kind.AGENT and turn.overall_score is not None and turn.status == Turn.TurnStatus.COMPLETED:
            per_agent.setdefault(turn.agent_name, {})[turn.round] = turn.overall_score
    if not per_agent:
        return None
    rounds = max(max_rounds, max(r for scores in per_agent.values() for r in scores))

    def x(round_number: int) -> float:
        return pad + (width - 2 * pad) * ((round_number - 1) / max(rounds - 1, 1))

    def y(score: float) -> float:
        return height - pad - (height - 2 * pad) * (score / 10)

    # Agents with equal scores would draw one line over the other and hide it: points that coincide
    # are spread a few pixels apart vertically (each dot's tooltip still gives the exact score).
    sharing: dict[tuple[int, float], list[str]] = {}
    for name, scores in per_agent.items():
        for r, score in scores.items():
            sharing.setdefault((r, round(score, 2)), []).append(name)

    def spread(name: str, r: int, score: float) -> float:
        names = sharing[(r, round(score, 2))]
        return (names.index(name) - (len(names) - 1) / 2) * 4.0

    series = []
    for index, (name, scores) in enumerate(per_agent.items()):
        points = [(x(r), y(s) + spread(name, r, s), r, s) for r, s in sorted(scores.items())]
        series.append(
            {
                "name": name,
                "index": index % 6,
                "points": " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in points),
                "dots": [{"x": f"{px:.1f}", "y": f"{py:.1f}", "round": r, "score": s} for px, py, r, s in points],
            }
        )
    y_ticks = [{"y": f"{y(v):.1f}", "label": v} for v in (0, 5, 10)]
    step = max(1, rounds // 10)
    x_ticks = [{"x": f"{x(r):.1f}", "label": r} for r in range(1, rounds + 1, step)]
    return Chart(width, height, rounds, series, y_ticks, x_ticks)


RESUME_BLOCKED = "You have no credits left, so the next turn cannot start."


def resume_blocked(session: WritingSession) -> str:
    """Why Resume would only pause again at once (out of credits, none left), or "" when it may run.

    Without this the Resume button flipped to Pause and straight back with nothing said.
    """
    from orchestration.models import Status, StopReason

    if session.status != Status.PAUSED or session.stop_reason != StopReason.OUT_OF_CREDITS:
        return ""
    from billing.services import get_balance

    return RESUME_BLOCKED if get_balance(session.project.owner) <= 0 else ""


def page_context(session: WritingSession) -> dict[str, Any]:
    """Everything session_detail renders, in a constant number of queries."""
    from orchestration.documents import versions_for_panel

    last_seq = WritingSession.objects.filter(pk=session.pk).values_list("last_seq", flat=True).get()
    turns = list(Turn.objects.filter(session=session).only(*TURN_FIELDS).order_by("round", "pk"))
    streaming_ids = [t.pk for t in turns if t.status == Turn.TurnStatus.STREAMING]
    streamed = ev.streamed_text(streaming_ids, up_to_seq=last_seq)
    thoughts = ev.streamed_text(streaming_ids, up_to_seq=last_seq, kind="reasoning")
    changes = _changes_by_turn(session.pk, turns)
    from orchestration import live_flows, live_plan

    shown, earlier = collapse_attempts(turns)
    items: OrderedDict[int, list[dict[str, Any]]] = OrderedDict()
    cache: ReviewCache = {}
    for turn in shown:
        context = _turn_context(
            turn,
            streamed.get(turn.pk),
            changes.get(turn.pk),
            thoughts.get(turn.pk),
            earlier.get(turn.pk),
            flow=session.flow,
            cache=cache,
        )
        items.setdefault(turn.round, []).append(context)
    # Each round is a list of blocks: one turn, or the turns of a parallel phase shown side by side.
    rounds = OrderedDict(
        (number, live_flows.round_blocks(number, round_items)) for number, round_items in items.items()
    )
    return {
        "session": session,
        "rounds": rounds,
        "phases": live_flows.phases(session),
        "report_html": live_flows.report_html(session),
        "plan_html": live_plan.plan_html(session),
        "last_seq": last_seq,
        "chart": score_chart(turns, session.max_rounds),
        "versions": versions_for_panel(session),
        "progress_percent": session.progress_percent,
        "resume_blocked": resume_blocked(session),
        "credits_held": credits_held(streaming_ids),
        "max_continue_rounds": MAX_CONTINUE_ROUNDS,
        "active": active_time(
            [(t.started_at, None if t.status == Turn.TurnStatus.STREAMING else t.finished_at) for t in turns
             if t.kind == Turn.Kind.AGENT]
        ),
    }  # fmt: skip


def header_html(session: WritingSession) -> str:
    from orchestration import live_flows

    return render_to_string(
        HEADER_TEMPLATE,
        {
            "session": session,
            "progress_percent": session.progress_percent,
            "phases": live_flows.phases(session),
            "active": session_active_time(session.pk),
            "credits_held": credits_held(
                list(session.turns.filter(status=Turn.TurnStatus.STREAMING).values_list("pk", flat=True))
            ),
        },
    )


def credits_held(streaming_turn_ids: list[int]) -> int:
    """Credits the turns being written hold (their reservations) until each settles to its exact charge."""
    from billing.services import credits_held as held

    return held(reservation_keys=[turn_reservation_key(pk) for pk in streaming_turn_ids])


# A streaming turn's text is cached under its id, its reasoning under ("reasoning", id); ("finished", id) marks
# a turn whose card was drawn finished (forget_finished).
TextKey = int | tuple[str, int]
TurnTextCache = dict[TextKey, str]


@dataclass
class SessionHead:
    """What a render read of the session row besides the fragments: the log's end when it was read."""

    last_seq: int = 0
    status: str = ""


@dataclass
class _Batch:
    """What one batch of events asks the page to redraw: streamed text per turn, whole cards, and panels."""

    # (offset, text) per turn: saved chunk events carry their offset in the turn's text (older ones do not).
    chunk_turns: OrderedDict[int, list[tuple[int | None, str]]]
    thought_turns: OrderedDict[int, list[tuple[int | None, str]]]
    card_turns: OrderedDict[int, None]
    header: bool = False
    chart: bool = False
    document: bool = False
    controls: bool = False
    report: bool = False
    plan: bool = False


def _classify(events: list[dict[str, Any]]) -> _Batch:
    """Sort a batch of events into the turns and panels they touch (no queries)."""
    batch = _Batch(OrderedDict(), OrderedDict(), OrderedDict())
    for event in events:
        kind, turn_id = event["kind"], event.get("turn_id")
        if kind == "chunk" and turn_id:
            batch.chunk_turns.setdefault(turn_id, []).append(_piece(event["payload"]))
        elif kind == "reasoning" and turn_id:
            batch.thought_turns.setdefault(turn_id, []).append(_piece(event["payload"]))
        elif kind in ("turn_started", "turn_finished", "human", "call_given_up") and turn_id:
            batch.card_turns[turn_id] = None
            batch.chunk_turns.pop(turn_id, None)  # the card is rendered whole, with its text
            batch.thought_turns.pop(turn_id, None)
            batch.chart = batch.chart or kind == "turn_finished"
            batch.header = True
        elif kind in ("status", "totals"):
            batch.header = True
            batch.controls = batch.controls or kind == "status"
            batch.document = batch.document or kind == "status"
        elif kind == "version":
            batch.document = True
        if kind in PLAN_EVENT_KINDS or (kind in ("turn_started", "turn_finished", "call_given_up", "status")):
            batch.plan = True
    return batch


def warm_up() -> None:
    """Pay a web process's first-render costs while it starts, not on a viewer's first push (issue 15).

    The first live render in a fresh process loads the URLconf (reverse(): about a second, the API's
    schemas) and compiles the live templates; a socket handles its messages in order, so the first viewer's
    streamed text waited behind it (half a second at load 7). No database work; called by atelier/asgi.py.
    """
    from django.template.loader import get_template

    from orchestration import live_flows

    reverse("session_detail", args=[1])
    templates = (TURN_TEMPLATE, ROUND_TEMPLATE, HEADER_TEMPLATE, CHART_TEMPLATE, live_flows.GROUP_TEMPLATE)
    for name in (*templates, live_flows.REPORT_TEMPLATE, live_plan.PLAN_TEMPLATE):
        get_template(name)
    render_markdown(streaming_document("# Warm\n\nup *text*"))


def render_fragments(
    session_id: int,
    events: list[dict[str, Any]],
    turn_text: TurnTextCache,
    *,
    full_text_for_chunks: bool = False,
    head: SessionHead | None = None,
) -> tuple[list[dict[str, Any]], int, str]:
    """Turn a batch of events into DOM fragments for the page. Returns (fragments, last seq, status).

    `turn_text` caches each streaming turn's text (key: turn id) and reasoning (key: ("reasoning", id))
    between batches of one connection. When the batch needs the session row (anything but streamed text),
    `head` (if given) is set to the row's last_seq and status: the consumer learns from it whether events
    after this batch exist that its pushes have not brought yet.
    """
    last_seq = max((e["seq"] for e in events), default=0)
    batch = _classify(events)
    # A push of streamed text alone needs no session row: no query per viewer for chunk pushes (issue 15).
    needs_session = full_text_for_chunks or any(e["kind"] not in ("chunk", "reasoning") for e in events)
    if not needs_session:  # text alone: nothing below needs the session
        text = _text_fragments(batch.chunk_turns, batch.thought_turns, turn_text, last_seq, full_text_for_chunks, {})
        return text, last_seq, ""
    session = WritingSession.objects.select_related("project").get(pk=session_id)
    if head is not None:
        head.last_seq, head.status = session.last_seq, session.status
    fragments: list[dict[str, Any]] = []
    if batch.card_turns:
        fragments += _card_fragments(session, batch, turn_text, last_seq)
    fragments += _text_fragments(
        batch.chunk_turns, batch.thought_turns, turn_text, last_seq, full_text_for_chunks, batch.card_turns
    )
    return fragments + _panel_fragments(session, batch), last_seq, session.status


def _cards_to_draw(session_id: int, card_turns: OrderedDict[int, None]) -> dict[int, Turn]:
    """The turns whose cards the batch redraws, by id; adds to `card_turns` the siblings a finished review renumbers."""
    turns = {t.pk: t for t in Turn.objects.filter(pk__in=list(card_turns), session_id=session_id).only(*TURN_FIELDS)}
    # A finished review renumbers its round's issues (E1, E2... in team order): re-render its siblings,
    # and the synthesizer or moderator whose decisions point at them.
    finished_rounds = {t.round for t in turns.values() if t.slot.startswith("review:") and t.status != "streaming"}
    if finished_rounds:
        siblings = (
            Turn.objects.filter(session_id=session_id, round__in=finished_rounds, status=Turn.TurnStatus.COMPLETED)
            .exclude(pk__in=list(turns))
            .exclude(slot="")
            .only(*TURN_FIELDS)
        )
        for sibling in siblings:
            if sibling.slot.startswith("review:") or sibling.slot in ("synthesize", "moderate"):
                turns[sibling.pk] = sibling
                card_turns[sibling.pk] = None
    return turns


def _card_fragments(
    session: WritingSession, batch: _Batch, turn_text: TurnTextCache, last_seq: int
) -> list[dict[str, Any]]:
    """One upsert fragment per turn card of the batch (sets `batch.report` when a report flow's turn ended)."""
    from orchestration import live_flows

    session_id = session.pk
    turns = _cards_to_draw(session_id, batch.card_turns)
    batch.report = batch.report or (
        session.flow in live_flows.REPORT_FLOWS and any(t.status != "streaming" for t in turns.values())
    )
    review_cache: ReviewCache = {}
    # Every attempt of the same calls: a card shows its earlier attempts folded, replaces their
    # cards on the page, and an attempt that has a later one is not drawn on its own.
    calls = Turn.objects.filter(
        session_id=session_id,
        kind=Turn.Kind.AGENT,
        round__in={t.round for t in turns.values()},
        agent_id__in={t.agent_id for t in turns.values() if t.agent_id},
    ).only(*TURN_FIELDS)
    _, earlier = collapse_attempts(sorted(calls, key=lambda t: t.pk))
    superseded = {t.pk for attempts in earlier.values() for t in attempts}
    streaming = [pk for pk, t in turns.items() if t.status == Turn.TurnStatus.STREAMING]
    # Text up to *these* events only: later chunks are already committed but will arrive in their
    # own messages and be appended then; reading them now would show them twice.
    texts = ev.streamed_text(streaming, up_to_seq=last_seq)
    thoughts = ev.streamed_text(streaming, up_to_seq=last_seq, kind="reasoning")
    changes = _changes_by_turn(session_id, list(turns.values()))
    fragments: list[dict[str, Any]] = []
    for pk in batch.card_turns:
        turn = turns.get(pk)
        if turn is None or pk in superseded:
            continue
        if pk in texts:
            turn_text[pk] = texts[pk]
            turn_text[("reasoning", pk)] = thoughts[pk]
        elif turn.status != Turn.TurnStatus.STREAMING:
            forget_finished(turn_text, pk)
        context = _turn_context(
            turn,
            texts.get(pk),
            changes.get(pk),
            thoughts.get(pk),
            earlier.get(pk),
            flow=session.flow,
            cache=review_cache,
        )
        fragment = {
            "target": f"turn-{pk}",
            "swap": "upsert",
            "round": turn.round,
            "round_html": render_to_string(ROUND_TEMPLATE, {"round_number": turn.round, "turns": []}),
            "html": render_to_string(TURN_TEMPLATE, context),
            "replaces": [f"turn-{t.pk}" for t in earlier.get(pk, [])],
        }
        if group := live_flows.parallel_group(turn):
            fragment["group"] = live_flows.group_id(turn.round, group)
            fragment["group_html"] = live_flows.group_html(turn.round, group)
        fragments.append(fragment)
    return fragments


def _panel_fragments(session: WritingSession, batch: _Batch) -> list[dict[str, Any]]:
    """Fragments for the panels around the turns: header, score chart, report, plan, controls, document."""
    fragments: list[dict[str, Any]] = []
    if batch.header:
        fragments.append({"target": "session-header", "swap": "outer", "html": header_html(session)})
    if batch.chart:
        # What score_chart reads, not every turn's text: this runs for each viewer at every turn's end (60 turns of
        # 20,000 characters: 6.4 ms against 1.4 ms a push on PostgreSQL; docs/benchmarks.md, "Issue 15, eleventh pass").
        turns_all = list(Turn.objects.filter(session_id=session.pk).only(*CHART_FIELDS))
        chart = render_to_string(CHART_TEMPLATE, {"chart": score_chart(turns_all, session.max_rounds)})
        fragments.append({"target": "score-chart", "swap": "outer", "html": chart})
    if batch.report or (batch.controls and session.flow in ("roundtable", "pipeline")):
        from orchestration import live_flows

        fragments.append({"target": "convergence-report", "swap": "outer", "html": live_flows.report_html(session)})
    if batch.plan and session.flow == "planned":
        from orchestration import live_plan

        fragments.append({"target": "plan-panel", "swap": "outer", "html": live_plan.plan_html(session)})
    if batch.controls:
        url = reverse("session_detail", args=[session.pk])
        fragments.append({"target": "session-controls", "swap": "refresh", "url": url})
    if batch.document:
        url = reverse("document_page", args=[session.pk])
        fragments.append({"target": "document-panel", "swap": "refresh", "url": url})
    return fragments


def _text_fragments(
    chunk_turns: Mapping[int, list[tuple[int | None, str]]],
    thought_turns: Mapping[int, list[tuple[int | None, str]]],
    turn_text: TurnTextCache,
    last_seq: int,
    full_text_for_chunks: bool,
    card_turns: Mapping[int, object],
) -> list[dict[str, Any]]:
    """Body and reasoning fragments for streamed text (turns whose card was just rendered are skipped)."""
    fragments: list[dict[str, Any]] = []
    for pk, parts in thought_turns.items():
        if pk in card_turns:
            continue  # its card was just rendered with the reasoning up to these events
        key = ("reasoning", pk)
        if full_text_for_chunks or key not in turn_text:
            turn_text[key] = ev.streamed_text([pk], up_to_seq=last_seq, kind="reasoning")[pk]
        elif not _merge_pieces(turn_text, key, parts):
            continue  # the page already has it (pushed before it was saved)
        fragments.append(
            {"target": f"turn-{pk}-reasoning-body", "swap": "inner", "html": reasoning_html(turn_text[key])}
        )
    for pk, parts in chunk_turns.items():
        if pk in card_turns:
            continue  # its card was just rendered with the text up to these events
        if full_text_for_chunks or pk not in turn_text:
            turn_text[pk] = ev.streamed_text([pk], up_to_seq=last_seq)[pk]
        elif not _merge_pieces(turn_text, pk, parts):
            continue  # the page already has it (pushed before it was saved)
        fragments.append(text_fragment(turn_text, pk))
    return fragments


def _piece(payload: dict[str, Any]) -> tuple[int | None, str]:
    offset = payload.get("offset")
    return (offset if isinstance(offset, int) else None), payload.get("text", "")


def _merge_pieces(turn_text: TurnTextCache, key: int | tuple[str, int], pieces: list[tuple[int | None, str]]) -> bool:
    """Merge pieces into turn_text[key]; True if the text grew. A gap leaves it as it was."""
    before = turn_text[key]
    text = before
    for offset, piece in pieces:
        merged = ev.merge_text(text, offset, piece)
        if merged is None:
            break
        text = merged
    turn_text[key] = text
    return len(text) > len(before)


def forget_finished(turn_text: TurnTextCache, pk: int) -> None:
    """Note that turn `pk`'s card was drawn finished: its streamed text is dropped from `turn_text`, and a
    tail pushed for it later (the engine's last push can overtake the turn's end) is ignored, so it never
    redraws the finished card's body with streamed text that lacks the reply's end."""
    turn_text.pop(pk, None)
    turn_text.pop(("reasoning", pk), None)
    turn_text[("finished", pk)] = ""


def _finished(turn_text: TurnTextCache, pk: object) -> bool:
    return isinstance(pk, int) and ("finished", pk) in turn_text


def tail_needs_text(turn_text: TurnTextCache, chunks: list[dict[str, Any]]) -> bool:
    """True if a pushed tail is for a turn whose text this connection does not hold yet (one query then)."""
    return any(
        (("reasoning", c.get("turn_id")) if c.get("kind") == "reasoning" else c.get("turn_id")) not in turn_text
        and not _finished(turn_text, c.get("turn_id"))
        for c in chunks
    )


def merge_tails(turn_text: TurnTextCache, chunks: list[dict[str, Any]], *, load: bool = False) -> list[TextKey]:
    """Merge unsaved streamed text pushed by the engine ({turn_id, kind, offset, text}) into `turn_text`.

    Returns the keys (turn id, or ("reasoning", id)) whose text grew, in push order. No query for turns
    whose text this connection holds (every push while a page watches); with `load`, a turn it does not
    hold yet (a page opened mid-reply) is read once from the database. A tail that starts past the text
    held (a push or a save was missed) changes nothing: the next saved event or catch-up fills the hole.
    """
    grown: list[TextKey] = []
    for chunk in chunks:
        pk, kind = chunk.get("turn_id"), chunk.get("kind")
        if not isinstance(pk, int) or _finished(turn_text, pk):
            continue  # not a turn's text (never pushed without one), or its card was drawn finished
        key: TextKey = ("reasoning", pk) if kind == "reasoning" else pk
        if key not in turn_text and load:
            turn_text[key] = ev.streamed_text([pk], kind="reasoning" if kind == "reasoning" else "chunk")[pk]
        grew = key in turn_text and _merge_pieces(turn_text, key, [(chunk.get("offset"), chunk.get("text", ""))])
        if grew and key not in grown:
            grown.append(key)
    return grown


def text_fragment(turn_text: TurnTextCache, key: TextKey) -> dict[str, Any]:
    """The fragment showing a streaming turn's text (key: turn id) or reasoning (key: ("reasoning", id)).

    The body is the document part of the reply as sanitized HTML, rendered block by block
    (live_markdown.streaming_html: the finished paragraphs' HTML is shared by every viewer in the process);
    the reasoning is escaped plain text.
    """
    if isinstance(key, tuple):
        pk = key[1]
        return {"target": f"turn-{pk}-reasoning-body", "swap": "inner", "html": reasoning_html(turn_text[key])}
    html = streaming_html(key, streaming_document(turn_text[key]))
    return {"target": f"turn-{key}-body", "swap": "inner", "html": html}


def tail_fragments(
    turn_text: TurnTextCache, chunks: list[dict[str, Any]], *, load: bool = False
) -> list[dict[str, Any]]:
    """Fragments for unsaved streamed text pushed by the engine: merge_tails, then one fragment per grown text."""
    return [text_fragment(turn_text, key) for key in merge_tails(turn_text, chunks, load=load)]
