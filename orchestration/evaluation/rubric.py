"""What we ask for: the evaluation instructions appended to every agent's system prompt."""

from __future__ import annotations

import json


def _fmt_weight(weight: float) -> str:
    return f"{weight:g}"


def rubric_instructions(criteria: list[tuple[str, str, float]], *, lead: str | None = None) -> str:
    """The evaluation request appended to every agent's system prompt; `lead` says what is scored."""
    lines = [
        "## Your evaluation",
        lead or "After the complete document, evaluate the document as it stands after your revision.",
    ]
    if criteria:
        lines.append(
            "Score each criterion below from 0 (very poor) to 10 (excellent); decimals such as 7.5 are fine. "
            "The weights say how much each criterion counts towards the overall score, which is computed for you."
        )
        lines.append("")
        lines.append("Criteria:")
        for name, description, weight in criteria:
            entry = f"- {name} (weight {_fmt_weight(float(weight))})"
            if description and description.strip():
                entry += f": {description.strip()}"
            lines.append(entry)
        example_scores = ", ".join(f"{json.dumps(str(name))}: <0-10>" for name, _, _ in criteria)
        example = "{" + f'"scores": {{{example_scores}}}, "feedback": "<what the next agent should improve>"' + "}"
    else:
        lines.append("Give one overall score from 0 (very poor) to 10 (excellent); decimals such as 7.5 are fine.")
        example = '{"overall": <0-10>, "feedback": "<what the next agent should improve>"}'
    lines += [
        "",
        "Write the evaluation as one JSON object inside <evaluation> tags, exactly in this shape, "
        "with numbers in place of the <0-10> placeholders:",
        "<evaluation>",
        example,
        "</evaluation>",
        "Use the criterion names exactly as written above. Keep the feedback short and concrete: it is passed "
        "to the next agent. Write nothing after </evaluation>.",
    ]
    return "\n".join(lines)
