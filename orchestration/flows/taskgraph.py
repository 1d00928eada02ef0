"""The planner's task graph: its schema, its validation and its order (waves, critical path).

A planner replies with JSON ``{"tasks": [{id, title, instructions, depends_on, kind, expected_output}]}``
(inside ``<plan>`` tags, a fenced block or bare). The shape is checked with pydantic (pinned in
requirements.txt); then the graph itself: not empty, no more tasks than the user's plan allows
(billing/plans.py ``max_plan_tasks``), unique ids, every dependency a task of the plan, no task that
depends on itself, no cycle. Every problem is a sentence the planner can act on in its repair round.
Nothing here raises on model output.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestration.evaluation.json_scan import json_candidates, try_load

KINDS = ("research", "outline", "section", "edit", "summary", "other")
TASK_ID = r"^[A-Za-z0-9_-]{1,16}$"
_PLAN_TAG = re.compile(r"<plan>\s*(.*?)\s*(?:</plan>|$)", re.S | re.I)


class PlannedTask(BaseModel):
    """One task of the graph as the planner must write it."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    id: str = Field(pattern=TASK_ID)
    title: str = Field(min_length=1, max_length=120)
    instructions: str = Field(min_length=1, max_length=4000)
    depends_on: list[str] = Field(default_factory=list, max_length=30)
    kind: Literal["research", "outline", "section", "edit", "summary", "other"] = "section"
    expected_output: str = Field(min_length=1, max_length=1000)


class TaskGraph(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tasks: list[PlannedTask]


def _extract(text: str) -> Any:
    """The first JSON object holding "tasks" (or a bare list of tasks) in the reply, else None."""
    tagged = _PLAN_TAG.search(text or "")
    sources = [tagged.group(1)] if tagged else []
    sources.append(text or "")
    for source in sources:
        candidates = []
        loaded = try_load(source.strip()) if source.strip().startswith(("{", "[")) else None
        if loaded is not None:
            candidates.append(loaded)
        candidates += json_candidates(source)
        for value in candidates:
            if isinstance(value, dict) and "tasks" in value:
                return value
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                return {"tasks": value}
    return None


def _pydantic_errors(error: ValidationError, raw: dict[str, Any]) -> list[str]:
    messages = []
    for item in error.errors()[:12]:
        loc = list(item["loc"])
        where = "the plan"
        if len(loc) >= 2 and loc[0] == "tasks" and isinstance(loc[1], int):
            tasks = raw.get("tasks") or []
            task = tasks[loc[1]] if loc[1] < len(tasks) and isinstance(tasks[loc[1]], dict) else {}
            label = f"task {loc[1] + 1}" + (f" ({task.get('id')!s:.20})" if task.get("id") else "")
            where = label + (f", field “{loc[2]}”" if len(loc) > 2 else "")
        elif loc:
            where = f"field “{loc[0]}”"
        message = item["msg"]
        if item["type"] == "literal_error":
            message = "kind must be one of " + ", ".join(KINDS)
        elif item["type"] == "string_pattern_mismatch":
            message = "ids are 1-16 letters, digits, “-” or “_”"
        messages.append(f"{where}: {message}.")
    return messages


def find_cycle(tasks: list[dict[str, Any]]) -> list[str]:
    """One cycle of the graph as [a, b, ..., a], or [] when it has none (depth-first search)."""
    deps = {t["id"]: list(t["depends_on"]) for t in tasks}
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        colour[node] = 1
        stack.append(node)
        for dep in deps.get(node, []):
            if colour.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep in deps and not colour.get(dep):
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        colour[node] = 2
        return []

    for task_id in deps:
        if not colour.get(task_id):
            found = visit(task_id)
            if found:
                return found
    return []


def graph_errors(tasks: list[dict[str, Any]], *, max_tasks: int) -> list[str]:
    """What is wrong with a schema-valid task list as a graph, in sentences for the planner."""
    if not tasks:
        return ["The plan has no tasks: list at least one."]
    errors = []
    if len(tasks) > max_tasks:
        errors.append(f"The plan has {len(tasks)} tasks; at most {max_tasks} are allowed. Merge some.")
    seen: set[str] = set()
    for task in tasks:
        if task["id"] in seen:
            errors.append(f"Two tasks have the id “{task['id']}”: ids must be unique.")
        seen.add(task["id"])
    for task in tasks:
        for dep in task["depends_on"]:
            if dep == task["id"]:
                errors.append(f"Task “{task['id']}” depends on itself.")
            elif dep not in seen:
                errors.append(f"Task “{task['id']}” depends on “{dep}”, which is not a task of the plan.")
    if not errors:
        cycle = find_cycle(tasks)
        if cycle:
            errors.append("The dependencies form a cycle: " + " → ".join(cycle) + ". Tasks must form a DAG.")
    return errors


def parse_plan(text: str, *, max_tasks: int) -> dict[str, Any]:
    """Turn.result of a plan call: {"tasks": [...], "waves": [[ids]], "errors": [...], "valid": bool, "tier"}.

    tier: "json" (a graph was found and parsed), "none" (no JSON task list in the reply). Never raises.
    """
    raw = _extract(text)
    if raw is None:
        return {
            "tasks": [],
            "waves": [],
            "valid": False,
            "tier": "none",
            "errors": ['No task graph found: reply with JSON {"tasks": [...]} inside <plan> tags.'],
        }
    try:
        graph = TaskGraph.model_validate(raw)
    except ValidationError as error:
        return {"tasks": [], "waves": [], "valid": False, "tier": "json", "errors": _pydantic_errors(error, raw)}
    tasks = [
        {**t.model_dump(), "depends_on": list(dict.fromkeys(t.depends_on))}  # a repeated dependency is one
        for t in graph.tasks
    ]
    errors = graph_errors(tasks, max_tasks=max_tasks)
    waves = [] if errors else topological_waves(tasks)
    return {"tasks": tasks, "waves": waves, "valid": not errors, "tier": "json", "errors": errors}


def topological_waves(tasks: list[dict[str, Any]]) -> list[list[str]]:
    """Levels of a valid DAG: wave 0 has no dependencies, wave k depends only on earlier waves (plan order kept)."""
    level: dict[str, int] = {}
    remaining = list(tasks)
    while remaining:
        progressed = []
        for task in remaining:
            if all(d in level for d in task["depends_on"]):
                level[task["id"]] = 1 + max((level[d] for d in task["depends_on"]), default=-1)
                progressed.append(task)
        if not progressed:  # a cycle: graph_errors refuses these first
            break
        remaining = [t for t in remaining if t not in progressed]
    waves: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for task in tasks:
        if task["id"] in level:
            waves[level[task["id"]]].append(task["id"])
    return waves


def critical_path(tasks: list[dict[str, Any]], seconds: dict[str, float]) -> tuple[float, list[str]]:
    """(length in seconds, task ids) of the longest dependency chain, weighing each task by `seconds`
    (ties: the chain with more tasks)."""
    best: dict[str, tuple[float, list[str]]] = {}
    for wave in topological_waves(tasks):
        for task_id in wave:
            task = next(t for t in tasks if t["id"] == task_id)
            before = max((best[d] for d in task["depends_on"] if d in best), default=(0.0, []), key=_weight)
            best[task_id] = (before[0] + seconds.get(task_id, 0.0), [*before[1], task_id])
    return max(best.values(), default=(0.0, []), key=_weight)


def _weight(chain: tuple[float, list[str]]) -> tuple[float, int]:
    """Longest by time; between chains of equal time, the one with more tasks."""
    return chain[0], len(chain[1])
