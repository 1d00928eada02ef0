"""What the live session page shows: its context, and the fragments pushed over the WebSocket.

The page and the consumer render the same partial templates from the database, so a reload,
a reconnect and a live push all show exactly the same thing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from django.template.loader import render_to_string
from django.urls import reverse

from orchestration import events as ev
from orchestration.evaluation import split_output
from orchestration.models import Turn, WritingSession
from orchestration.rendering import render_markdown

TURN_TEMPLATE = "orchestration/partials/live_turn.html"
ROUND_TEMPLATE = "orchestration/partials/live_round.html"
HEADER_TEMPLATE = "orchestration/partials/live_header.html"
CHART_TEMPLATE = "orchestration/partials/live_chart.html"

TURN_FIELDS = (
    "id", "round", "agent_id", "agent_name", "attempt", "kind", "status", "model_used", "output_text", "scores",
    "overall_score", "parse_tier", "input_tokens", "cached_tokens", "output_tokens", "credits", "latency_ms",
    "ttft_ms", "error", "prompt_notes", "started_at", "finished_at", "cache_write_tokens", "usage_estimated",
    "stop_reason",
)  # fmt: skip


def turn_body_html(turn: Turn, streamed: str | None = None) -> str:
    if turn.status == Turn.TurnStatus.STREAMING:
        return render_markdown(streamed or "")
    if turn.kind == Turn.Kind.HUMAN:
        return render_markdown(turn.output_text)
    document, _ = split_output(turn.output_text)
    return render_markdown(document)


def _turn_context(turn: Turn, streamed: str | None) -> dict:
    return {"turn": turn, "body_html": turn_body_html(turn, streamed)}


@dataclass
class Chart:
    width: int
    height: int
    rounds: int
    series: list[dict]
    y_ticks: list[dict]
    x_ticks: list[dict]


def score_chart(turns: list[Turn], max_rounds: int) -> Chart | None:
    """Overall score per agent across rounds, laid out for an inline SVG (no JS library)."""
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

    series = []
    for index, (name, scores) in enumerate(per_agent.items()):
        points = [(x(r), y(s), r, s) for r, s in sorted(scores.items())]
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


def page_context(session: WritingSession) -> dict:
    """Everything session_detail renders, in a constant number of queries."""
    from orchestration.documents import versions_for_panel

    last_seq = WritingSession.objects.filter(pk=session.pk).values_list("last_seq", flat=True).get()
    turns = list(Turn.objects.filter(session=session).only(*TURN_FIELDS).order_by("round", "pk"))
    streaming_ids = [t.pk for t in turns if t.status == Turn.TurnStatus.STREAMING]
    streamed = ev.streamed_text(streaming_ids, up_to_seq=last_seq)
    rounds: OrderedDict[int, list[dict]] = OrderedDict()
    for turn in turns:
        rounds.setdefault(turn.round, []).append(_turn_context(turn, streamed.get(turn.pk)))
    return {
        "session": session,
        "rounds": rounds,
        "last_seq": last_seq,
        "chart": score_chart(turns, session.max_rounds),
        "versions": versions_for_panel(session),
        "progress_percent": session.progress_percent,
    }


def header_html(session: WritingSession) -> str:
    return render_to_string(
        HEADER_TEMPLATE,
        {
            "session": session,
            "progress_percent": session.progress_percent,
        },
    )


def render_fragments(
    session_id: int, events: list[dict], turn_text: dict[int, str], *, full_text_for_chunks: bool = False
) -> tuple[list[dict], int, str]:
    """Turn a batch of events into DOM fragments for the page. Returns (fragments, last seq, status)."""
    session = WritingSession.objects.select_related("project").get(pk=session_id)
    last_seq = max((e["seq"] for e in events), default=0)
    fragments: list[dict] = []
    chunk_turns: OrderedDict[int, list[str]] = OrderedDict()
    card_turns: OrderedDict[int, None] = OrderedDict()
    header = chart = document = controls = False
    for event in events:
        kind, turn_id = event["kind"], event.get("turn_id")
        if kind == "chunk" and turn_id:
            chunk_turns.setdefault(turn_id, []).append(event["payload"].get("text", ""))
        elif kind in ("turn_started", "turn_finished", "human") and turn_id:
            card_turns[turn_id] = None
            chunk_turns.pop(turn_id, None)  # the card is rendered whole, with its text
            chart = chart or kind == "turn_finished"
            header = True
        elif kind in ("status", "totals"):
            header = True
            controls = controls or kind == "status"
            document = document or kind == "status"
        elif kind == "version":
            document = True
    session_detail_url = reverse("session_detail", args=[session_id])
    if card_turns:
        turns = {
            t.pk: t for t in Turn.objects.filter(pk__in=list(card_turns), session_id=session_id).only(*TURN_FIELDS)
        }
        streaming = [pk for pk, t in turns.items() if t.status == Turn.TurnStatus.STREAMING]
        # Text up to *these* events only: later chunks are already committed but will arrive in their
        # own messages and be appended then; reading them now would show them twice.
        texts = ev.streamed_text(streaming, up_to_seq=last_seq)
        for pk in card_turns:
            turn = turns.get(pk)
            if turn is None:
                continue
            if pk in texts:
                turn_text[pk] = texts[pk]
            fragments.append(
                {
                    "target": f"turn-{pk}",
                    "swap": "upsert",
                    "round": turn.round,
                    "round_html": render_to_string(ROUND_TEMPLATE, {"round_number": turn.round, "turns": []}),
                    "html": render_to_string(TURN_TEMPLATE, _turn_context(turn, texts.get(pk))),
                }
            )
    for pk, parts in chunk_turns.items():
        if pk in card_turns:
            continue  # its card was just rendered with the text up to these events
        if full_text_for_chunks or pk not in turn_text:
            turn_text[pk] = ev.streamed_text([pk], up_to_seq=last_seq)[pk]
        else:
            turn_text[pk] += "".join(parts)
        fragments.append({"target": f"turn-{pk}-body", "swap": "inner", "html": render_markdown(turn_text[pk])})
    if header:
        fragments.append({"target": "session-header", "swap": "outer", "html": header_html(session)})
    if chart:
        turns_all = list(Turn.objects.filter(session_id=session_id).only(*TURN_FIELDS))
        fragments.append(
            {
                "target": "score-chart",
                "swap": "outer",
                "html": render_to_string(CHART_TEMPLATE, {"chart": score_chart(turns_all, session.max_rounds)}),
            }
        )
    if controls:
        fragments.append({"target": "session-controls", "swap": "refresh", "url": session_detail_url})
    if document:
        fragments.append(
            {"target": "document-panel", "swap": "refresh", "url": reverse("document_page", args=[session_id])}
        )
    return fragments, last_seq, session.status
