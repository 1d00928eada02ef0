# ruff: noqa: E501 - realistic model replies have long lines
"""Issue lists, decisions and resolutions are parsed in tiers from realistic replies, never raising."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestration.flows import parse_result
from orchestration.flows.structured import parse_items, strip_blocks

CLAUDE_STYLE = """The draft makes a reasonable case, but the argument leans on assertion.

<issues>
[
  {"severity": "high", "passage": "Bike lanes always reduce traffic", "problem": "An absolute claim with no source.", "fix": "Cite the Seville study or soften to 'often'."},
  {"severity": "medium", "passage": "Many cities", "problem": "Vague.", "fix": "Name two cities."},
  {"severity": "low", "passage": "In conclusion,", "problem": "Stock phrase.", "fix": "Cut it."}
]
</issues>

<evaluation>
{"scores": {"Clarity": 7}, "feedback": "Support the central claim."}
</evaluation>"""

GPT_FENCED = """Overall: solid structure, weak evidence.

```json
{"issues": [
  {"severity": "HIGH", "quote": "costs nothing", "issue": "False: lanes cost money.", "suggestion": "Give the cost range."},
  {"severity": "Minor", "quote": "very unique", "issue": "Redundant intensifier.", "suggestion": "Say 'unique'."},
]}
```

<evaluation>{"scores": {"Clarity": 6.5}, "feedback": "Fix the cost claim."}</evaluation>"""

LLAMA_TEXT = """Here is my review of the document.

1. **Severity: High** - Passage: "the data proves" - Problem: no data is given. Fix: add the figures from the reference.
2. **Severity: Medium** - Passage: "Secondly" - Problem: there is no firstly. Fix: renumber the points.
3. **Severity: Low** - Passage: "alot" - Problem: spelling. Fix: "a lot".

<evaluation>
Clarity: 6/10
Feedback: Add the data.
</evaluation>"""

GEMINI_BRACKETS = """<issues>
- [HIGH] "Everyone agrees": overclaims consensus -> Name who disagrees and answer them.
- [medium] The ending repeats the introduction -> End on the recommendation.
- (low) "utilize": plain word exists -> use
</issues>
<evaluation>{"overall": 6}</evaluation>"""

MISTRAL_LOOSE = """<issues>
The introduction is too long.
Too many acronyms in section two.
</issues>
<evaluation>{"overall": 5}</evaluation>"""


@pytest.mark.parametrize(
    "text, tier, severities",
    [
        (CLAUDE_STYLE, "json", ["high", "medium", "low"]),
        (GPT_FENCED, "json", ["high", "low"]),
        (LLAMA_TEXT, "text", ["high", "medium", "low"]),
        (GEMINI_BRACKETS, "text", ["high", "medium", "low"]),
        (MISTRAL_LOOSE, "fallback", ["medium", "medium"]),
        ("The document is fine. No further comments.", "none", []),
        ("<issues>\n[]\n</issues>", "json", []),
    ],
)
def test_issue_lists_from_several_model_families(text, tier, severities):
    _, _, result = parse_result("critique", text, [("Clarity", 1)])
    assert result["tier"] == tier
    assert [i["severity"] for i in result["issues"]] == severities
    assert result["counts"]["high"] == severities.count("high")
    for issue in result["issues"]:
        assert issue["problem"] and set(issue) == {"severity", "passage", "problem", "fix"}


def test_issue_fields_are_read_from_each_format():
    _, _, claude = parse_result("critique", CLAUDE_STYLE, [])
    assert claude["issues"][0]["passage"] == "Bike lanes always reduce traffic"
    assert claude["issues"][0]["fix"].startswith("Cite the Seville")
    _, _, gpt = parse_result("critique", GPT_FENCED, [])
    assert gpt["issues"][0] == {
        "severity": "high",
        "passage": "costs nothing",
        "problem": "False: lanes cost money.",
        "fix": "Give the cost range.",
    }
    _, _, llama = parse_result("critique", LLAMA_TEXT, [])
    assert llama["issues"][0] == {
        "severity": "high",
        "passage": "the data proves",
        "problem": "no data is given",
        "fix": "add the figures from the reference",
    }
    gemini = parse_items(GEMINI_BRACKETS, "issues")[0]
    assert gemini[0]["passage"] == "Everyone agrees" and gemini[0]["fix"].startswith("Name who disagrees")


def test_a_critique_never_becomes_the_document_and_keeps_its_scores():
    document, evaluation, _ = parse_result("critique", CLAUDE_STYLE, [("Clarity", 1)])
    assert document == ""
    assert evaluation.scores == {"Clarity": 7.0} and evaluation.tier == "json"


SYNTHESIS = """# Bike lanes

Cities should build protected bike lanes.

<decisions>
[{"id": "E1", "decision": "accepted", "reason": "The claim needed a source."},
 {"id": "E2", "decision": "rejected", "reason": "Naming cities adds little here."}]
</decisions>

<evaluation>{"scores": {"Clarity": 8}, "feedback": "Good."}</evaluation>"""

SYNTHESIS_TEXT = """# Bike lanes

Body.

<decisions>
- E1: accepted - it was the key weakness
- E2 - Rejected because the line editor's version reads better
- E3: partly applied; kept the example, dropped the table
</decisions>
<evaluation>{"overall": 8}</evaluation>"""

MODERATION = """# Spec

Revised.

<resolutions>
I1 fixed: added the cost range.
I2 declined: the critic misread the scope.
</resolutions>
<evaluation>{"overall": 7}</evaluation>"""


def test_decisions_and_resolutions_are_parsed_and_kept_out_of_the_document():
    document, _, result = parse_result("synthesize", SYNTHESIS, [("Clarity", 1)], (11, 12))
    assert document.startswith("# Bike lanes") and "<decisions>" not in document and "E1" not in document
    assert [(d["id"], d["verdict"]) for d in result["decisions"]] == [("E1", "accepted"), ("E2", "rejected")]
    assert result["tier"] == "json" and result["inputs"] == [11, 12]

    _, _, text = parse_result("synthesize", SYNTHESIS_TEXT, [])
    assert [(d["id"], d["verdict"]) for d in text["decisions"]] == [
        ("E1", "accepted"),
        ("E2", "rejected"),
        ("E3", "partly"),
    ]
    assert text["tier"] == "text" and "key weakness" in text["decisions"][0]["reason"]

    document, _, moderation = parse_result("moderate", MODERATION, [])
    assert "<resolutions>" not in document and document.startswith("# Spec")
    assert [(r["id"], r["verdict"]) for r in moderation["resolutions"]] == [("I1", "fixed"), ("I2", "declined")]


def test_truncated_json_issue_list_is_repaired():
    cut = '<issues>\n[{"severity": "high", "passage": "x", "problem": "Missing owner.", "fix": "Name one."}, {"severity": "lo'
    items, tier = parse_items(cut, "issues")
    assert tier == "json" and items[0]["problem"] == "Missing owner."


def test_strip_blocks_removes_unclosed_blocks():
    assert strip_blocks("Doc\n\n<decisions>\n[{...") == "Doc"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400), st.sampled_from(["issues", "decisions", "resolutions"]))
def test_parsing_never_raises(text, kind):
    items, tier = parse_items(text, kind)
    assert tier in ("json", "text", "fallback", "none") and isinstance(items, list)
    parse_result("critique", text, [("Clarity", 1)])
