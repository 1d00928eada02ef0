"""The writer/editor workload in LangGraph, run with var/bench-venv/bin/python (see run.py).

    python bench/peers/langgraph_peer.py none|sqlite|postgres

Each node is one streamed chat completion with the plain openai SDK; the graph loops writer -> editor
for ROUNDS rounds. With a checkpointer LangGraph saves the state after every node (durable="sync",
so each checkpoint is written before the next node starts, as Atelier saves each turn).
"""

from __future__ import annotations

import operator
import os
import sys
import tempfile
import uuid
from typing import Annotated, TypedDict

sys.path.insert(0, os.path.dirname(__file__))

import openai
from common import CALLS, MODEL, ROUNDS, base_url, editor_messages, measure, writer_messages
from langgraph.graph import END, START, StateGraph

client = openai.OpenAI(api_key="bench", base_url=base_url(), max_retries=0)


def stream(messages: list[dict]) -> str:
    parts = []
    for chunk in client.chat.completions.create(
        model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}, max_tokens=512
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


class State(TypedDict):
    document: str
    notes: str
    round: int
    calls: Annotated[int, operator.add]


def writer(state: State) -> dict:
    return {"document": stream(writer_messages(state["document"], state["notes"])), "calls": 1}


def editor(state: State) -> dict:
    return {"notes": stream(editor_messages(state["document"])), "round": state["round"] + 1, "calls": 1}


def after_editor(state: State) -> str:
    return END if state["round"] >= ROUNDS else "writer"


def build(checkpointer):
    graph = StateGraph(State)
    graph.add_node("writer", writer)
    graph.add_node("editor", editor)
    graph.add_edge(START, "writer")
    graph.add_edge("writer", "editor")
    graph.add_conditional_edges("editor", after_editor)
    return graph.compile(checkpointer=checkpointer)


def baseline() -> None:
    document = notes = ""
    for _ in range(ROUNDS):
        document = stream(writer_messages(document, notes))
        notes = stream(editor_messages(document))


def run(app, durable: bool) -> None:
    config = {"configurable": {"thread_id": uuid.uuid4().hex}, "recursion_limit": CALLS + 5}
    kwargs = {"durability": "sync"} if durable else {}
    final = app.invoke({"document": "", "notes": "", "round": 0, "calls": 0}, config, **kwargs)
    assert final["calls"] == CALLS, final["calls"]


def main() -> None:
    kind = sys.argv[1]
    if kind == "none":
        app = build(None)
        measure("LangGraph, no checkpointer", baseline, lambda: run(app, False))
    elif kind == "sqlite":
        import sqlite3

        from langgraph.checkpoint.sqlite import SqliteSaver

        path = os.path.join(tempfile.mkdtemp(prefix="peers-"), "checkpoints.sqlite3")
        saver = SqliteSaver(sqlite3.connect(path, check_same_thread=False))
        saver.setup()
        app = build(saver)
        measure("LangGraph + SQLite checkpointer", baseline, lambda: run(app, True))
    elif kind == "postgres":
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(os.environ["PEERS_POSTGRES_URL"]) as saver:
            saver.setup()
            app = build(saver)
            measure("LangGraph + PostgreSQL checkpointer", baseline, lambda: run(app, True))
    else:
        raise SystemExit(f"unknown checkpointer {kind!r}: none, sqlite or postgres")


if __name__ == "__main__":
    main()
