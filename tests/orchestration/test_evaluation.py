"""Evaluation parsing: real-looking model replies in, scores / overall / tier out, and never an exception."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestration.evaluation import (
    TIERS,
    Evaluation,
    parse_evaluation,
    parse_reply,
    rubric_instructions,
    split_output,
)

RUBRIC = [("Clarity", 2.0), ("Structure", 1.0), ("Argument strength", 1.0)]

# (id, evaluation text, criteria, expected scores, expected overall, expected tier)
CASES = [
    (
        "claude_json_inside_tags",
        '{\n  "scores": {"Clarity": 8, "Structure": 7, "Argument strength": 9},\n'
        '  "feedback": "The second section repeats the first; cut it and add a concrete example."\n}',
        RUBRIC,
        {"Clarity": 8, "Structure": 7, "Argument strength": 9},
        8.0,
        "json",
    ),
    (
        "gpt_chatty_fenced_json",
        'Sure! Here\'s my evaluation of the revised draft:\n\n```json\n{\n  "scores": {\n    "Clarity": 8.5,\n'
        '    "Structure": 7,\n    "Argument strength": 7\n  },\n  "feedback": "Good flow overall."\n}\n```\n\n'
        "Let me know if you'd like me to adjust anything!",
        RUBRIC,
        {"Clarity": 8.5, "Structure": 7, "Argument strength": 7},
        7.75,
        "json",
    ),
    (
        "json_with_comments_and_trailing_commas",
        '```json\n{\n  "Clarity": 8, // much clearer now\n  "Structure": 6,\n  "Argument strength": 7,\n}\n```',
        RUBRIC,
        {"Clarity": 8, "Structure": 6, "Argument strength": 7},
        7.25,
        "json",
    ),
    (
        "json_cut_off_in_feedback",
        '{"scores": {"Clarity": 7, "Structure": 8, "Argument strength": 6}, "feedback": "Shorten the intro and',
        RUBRIC,
        {"Clarity": 7, "Structure": 8, "Argument strength": 6},
        7.0,
        "json",
    ),
    (
        "json_cut_off_inside_scores",
        '```json\n{"scores": {"Clarity": 9, "Structure": 8, "Argum',
        RUBRIC,
        {"Clarity": 9, "Structure": 8},
        8.67,
        "json",
    ),
    (
        "python_style_single_quotes",
        "{'Clarity': 6, 'Structure': 6, 'Argument strength': 9}",
        RUBRIC,
        {"Clarity": 6, "Structure": 6, "Argument strength": 9},
        6.75,
        "json",
    ),
    (
        "snake_case_keys_with_comments",
        '{"clarity": 8, "structure": 8, "argument_strength": 8, "comments": "Solid, ready to ship."}',
        RUBRIC,
        {"Clarity": 8, "Structure": 8, "Argument strength": 8},
        8.0,
        "json",
    ),
    (
        "keys_with_score_suffix",
        '{"clarity_score": 7, "structure_score": 5, "argument_strength_score": 9}',
        RUBRIC,
        {"Clarity": 7, "Structure": 5, "Argument strength": 9},
        7.0,
        "json",
    ),
    (
        "string_values_with_mixed_scales",
        '{"Clarity": "8/10", "Structure": "3/5", "Argument-Strength": "90%"}',
        RUBRIC,
        {"Clarity": 8, "Structure": 6, "Argument strength": 9},
        7.75,
        "json",
    ),
    (
        "json_numbers_on_a_hundred_scale",
        '{"scores": {"Clarity": 85, "Structure": 70, "Argument strength": 90}}',
        RUBRIC,
        {"Clarity": 8.5, "Structure": 7, "Argument strength": 9},
        8.25,
        "json",
    ),
    (
        "list_of_criterion_objects",
        '{"evaluation": [{"criterion": "Clarity", "score": 7, "comment": "Mostly clear."}, '
        '{"criterion": "Structure", "score": 9}, '
        '{"criterion": "Argument strength", "score": 5, "comment": "Needs evidence."}]}',
        RUBRIC,
        {"Clarity": 7, "Structure": 9, "Argument strength": 5},
        7.0,
        "json",
    ),
    (
        "nested_objects_out_of_five",
        '{"Clarity": {"score": 4, "max": 5, "justification": "clear"}, "Structure": {"score": 3, "out_of": 5}, '
        '"Argument strength": {"rating": 5, "scale": 5}}',
        RUBRIC,
        {"Clarity": 8, "Structure": 6, "Argument strength": 10},
        8.0,
        "json",
    ),
    (
        "unquoted_fractions_in_json",
        '{"Clarity": 8/10, "Structure": 7/10, "Argument strength": 4/5}',
        RUBRIC,
        {"Clarity": 8, "Structure": 7, "Argument strength": 8},
        7.75,
        "json",
    ),
    (
        "json_overall_without_rubric",
        '{"overall": 8.5, "feedback": "Nearly there."}',
        [],
        {},
        8.5,
        "json",
    ),
    (
        "model_overall_ignored_when_criteria_scored",
        '{"scores": {"Clarity": 6, "Structure": 6, "Argument strength": 6}, "overall": 9}',
        RUBRIC,
        {"Clarity": 6, "Structure": 6, "Argument strength": 6},
        6.0,
        "json",
    ),
    (
        "out_of_range_values_clamped",
        '{"Clarity": "11/10", "Structure": -2, "Argument strength": 7}',
        RUBRIC,
        {"Clarity": 10, "Structure": 0, "Argument strength": 7},
        6.75,
        "json",
    ),
    (
        "json_object_between_prose",
        'Scores below.\n{"Clarity": 10, "Structure": 10, "Argument strength": 10}\nGreat job - nothing left to fix.',
        RUBRIC,
        {"Clarity": 10, "Structure": 10, "Argument strength": 10},
        10.0,
        "json",
    ),
    (
        "llama_markdown_bullets",
        "**Evaluation:**\n\n* **Clarity**: 8/10\n* **Structure**: 6/10\n* **Argument Strength**: 7/10\n\n"
        "**Overall**: 7.25/10\n\nThe draft is much improved.",
        RUBRIC,
        {"Clarity": 8, "Structure": 6, "Argument strength": 7},
        7.25,
        "natural",
    ),
    (
        "bold_names_out_of_five",
        "**Clarity**: 4/5\n**Structure**: 3/5\n**Argument strength**: 5/5",
        RUBRIC,
        {"Clarity": 8, "Structure": 6, "Argument strength": 10},
        8.0,
        "natural",
    ),
    (
        "lowercase_dash_out_of_ten",
        "clarity - 8.5 out of 10\nstructure - 6 out of 10\nargument strength - 7 out of 10",
        RUBRIC,
        {"Clarity": 8.5, "Structure": 6, "Argument strength": 7},
        7.5,
        "natural",
    ),
    (
        "weights_in_parentheses_and_percentages",
        "Clarity (weight 2): 80%\nStructure (weight 1): 60%\nArgument strength (weight 1): 70%",
        RUBRIC,
        {"Clarity": 8, "Structure": 6, "Argument strength": 7},
        7.25,
        "natural",
    ),
    (
        "conversational_sentence",
        "Overall this is a strong revision. I'd rate the clarity 7 out of 10, the structure a solid 8, "
        "and the argument strength 6/10 because the evidence is thin.",
        RUBRIC,
        {"Clarity": 7, "Structure": 8, "Argument strength": 6},
        7.0,
        "natural",
    ),
    (
        "markdown_table",
        "| Criterion | Score | Comment |\n|---|---|---|\n| Clarity | 9/10 | Crisp |\n| Structure | 8/10 | Logical |\n"
        "| Argument strength | 6/10 | Needs sources |\n\n**Weighted overall:** 8.0",
        RUBRIC,
        {"Clarity": 9, "Structure": 8, "Argument strength": 6},
        8.0,
        "natural",
    ),
    (
        "headings_with_score_on_next_line",
        "### Clarity\nScore: 7/10\nThe opening is clear.\n\n### Structure\nScore: 4/5\n\n"
        "### Argument strength\nScore: 60/100",
        RUBRIC,
        {"Clarity": 7, "Structure": 8, "Argument strength": 6},
        7.0,
        "natural",
    ),
    (
        "numbered_list",
        "1. Clarity: 9\n2. Structure: 7\n3. Argument strength: 8\n\nFeedback: add a conclusion.",
        RUBRIC,
        {"Clarity": 9, "Structure": 7, "Argument strength": 8},
        8.25,
        "natural",
    ),
    (
        "score_before_criterion_name",
        "I'd give 8/10 for clarity, 6/10 for structure and 7 out of 10 for argument strength.",
        RUBRIC,
        {"Clarity": 8, "Structure": 6, "Argument strength": 7},
        7.25,
        "natural",
    ),
    (
        "years_and_rounds_are_not_scores",
        "Clarity: 8/10 (much better than the 2023 version)\nStructure: 7/10 - round 2 fixed the order\n"
        "Argument strength: 9/10",
        RUBRIC,
        {"Clarity": 8, "Structure": 7, "Argument strength": 9},
        8.0,
        "natural",
    ),
    (
        "gemini_criterion_prefix",
        "Criterion: Clarity - Score: 8\nCriterion: Structure - Score: 9\nCriterion: Argument strength - Score: 7",
        RUBRIC,
        {"Clarity": 8, "Structure": 9, "Argument strength": 7},
        8.0,
        "natural",
    ),
    (
        "mixed_scales_on_one_line",
        "Clarity: 9/10; Structure: 4/5; Argument strength: 70%",
        RUBRIC,
        {"Clarity": 9, "Structure": 8, "Argument strength": 7},
        8.25,
        "natural",
    ),
    (
        "only_an_overall_in_prose",
        "Overall score: 7.5/10. The piece reads well but the ending is abrupt.",
        RUBRIC,
        {},
        7.5,
        "natural",
    ),
    (
        "a_criterion_left_unscored",
        "Clarity: 9/10\nStructure: 6/10\n(I couldn't judge the arguments yet.)",
        RUBRIC,
        {"Clarity": 9, "Structure": 6},
        8.0,
        "natural",
    ),
    (
        "bare_numbers_on_one_line",
        "8 7 9",
        RUBRIC,
        {"Clarity": 8, "Structure": 7, "Argument strength": 9},
        8.0,
        "fallback",
    ),
    (
        "bare_numbers_one_per_line",
        "8\n7",
        RUBRIC,
        {"Clarity": 8, "Structure": 7},
        7.67,
        "fallback",
    ),
    (
        "fallback_skips_years_and_word_counts",
        "Scores for the 2024 edition (1500 words): 6, 7, 8",
        RUBRIC,
        {"Clarity": 6, "Structure": 7, "Argument strength": 8},
        6.75,
        "fallback",
    ),
    (
        "fallback_percentages",
        "85% 70% 90%",
        RUBRIC,
        {"Clarity": 8.5, "Structure": 7, "Argument strength": 9},
        8.25,
        "fallback",
    ),
    (
        "scores_as_words_are_left_unparsed",
        "Clarity is excellent, structure is good, argument strength is weak.",
        RUBRIC,
        {},
        None,
        "none",
    ),
    (
        "eight_out_of_ten_in_words",
        "Clarity: eight out of ten. Structure: seven.",
        RUBRIC,
        {},
        None,
        "none",
    ),
    ("empty_reply", "", RUBRIC, {}, None, "none"),
    ("refusal", "I'm sorry, but I can't evaluate this document.", RUBRIC, {}, None, "none"),
]


@pytest.mark.parametrize(
    ("text", "criteria", "scores", "overall", "tier"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_realistic_replies_parse_to_expected_scores(text, criteria, scores, overall, tier):
    evaluation = parse_evaluation(text, criteria)

    assert evaluation.tier == tier
    assert evaluation.scores == pytest.approx({name: float(value) for name, value in scores.items()})
    if overall is None:
        assert evaluation.overall is None
    else:
        assert evaluation.overall == pytest.approx(overall, abs=0.006)
    assert evaluation.raw == text


def test_table_has_at_least_thirty_cases_in_every_tier():
    assert len(CASES) >= 30
    assert {case[5] for case in CASES} == set(TIERS)


def test_json_feedback_is_kept_for_the_next_agent():
    evaluation = parse_evaluation(
        '{"scores": {"Clarity": 6}, "feedback": "Cut the second paragraph.", "suggestions": ["Add a source"]}',
        RUBRIC,
    )

    assert "Cut the second paragraph." in evaluation.feedback
    assert "Add a source" in evaluation.feedback


def test_per_criterion_comments_become_feedback():
    evaluation = parse_evaluation(
        '[{"criterion": "Argument strength", "score": 5, "comment": "Needs evidence."}]',
        RUBRIC,
    )

    assert evaluation.feedback == "Argument strength: Needs evidence."


def test_natural_language_feedback_keeps_the_prose_and_drops_score_lines():
    evaluation = parse_evaluation(
        "Clarity: 8/10\nStructure: 7/10\n\nThe conclusion restates the intro; end on the call to action instead.",
        RUBRIC,
    )

    assert evaluation.feedback == "The conclusion restates the intro; end on the call to action instead."


def test_a_feedback_label_is_dropped_from_prose_feedback():
    evaluation = parse_evaluation("Clarity: 7.4/10\nOverall: 7.4/10\nFeedback: Add one concrete example.", RUBRIC)

    assert evaluation.feedback == "Add one concrete example."


def test_a_table_header_is_not_feedback():
    text = "| Criterion | Score |\n|---|---|\n| Clarity | 9/10 |"

    assert parse_evaluation(text, RUBRIC).feedback == ""


def test_weights_decide_the_overall():
    heavy = [("Clarity", 3.0), ("Structure", 1.0)]

    assert parse_evaluation("Clarity: 10/10\nStructure: 2/10", heavy).overall == 8.0


def test_zero_weights_fall_back_to_a_plain_mean():
    assert parse_evaluation('{"Clarity": 6, "Structure": 8}', [("Clarity", 0), ("Structure", 0)]).overall == 7.0


def test_first_json_block_does_not_need_the_word_scores():
    evaluation = parse_evaluation('```\n{"Clarity": 9}\n```', RUBRIC)

    assert evaluation.tier == "json"
    assert evaluation.scores == {"Clarity": 9.0}


def test_json_without_any_known_criterion_falls_through_to_prose():
    evaluation = parse_evaluation('{"tone": 9}\nClarity: 6/10', RUBRIC)

    assert evaluation.tier == "natural"
    assert evaluation.scores == {"Clarity": 6.0}


def test_invalid_input_types_do_not_raise():
    assert parse_evaluation(None, RUBRIC).tier == "none"  # type: ignore[arg-type]
    assert parse_evaluation("Overall: 8/10", None).overall == 8.0  # type: ignore[arg-type]
    assert parse_evaluation("Clarity: 8/10", [("Clarity",)]).tier == "none"  # type: ignore[list-item]


def test_huge_input_is_parsed_from_its_tail():
    text = "blah " * 50_000 + '{"Clarity": 7}'

    assert parse_evaluation(text, RUBRIC).scores == {"Clarity": 7.0}


# --------------------------------------------------------------------------------------------------
# Property-based: arbitrary text never breaks the parser
# --------------------------------------------------------------------------------------------------

FRAGMENTS = st.sampled_from(
    [
        "Clarity",
        "clarity",
        "**Structure**",
        "argument_strength",
        "Overall",
        ":",
        " ",
        "\n",
        "/10",
        "/5",
        "/0",
        "%",
        " out of ",
        "{",
        "}",
        "[",
        "]",
        '"',
        "'",
        ",",
        "```json\n",
        "```",
        "<evaluation>",
        "</evaluation>",
        "2024",
        "-3",
        "1e309",
        "NaN",
        "9999",
        "0.5",
        "100",
        "(weight 2)",
        "score",
        '"scores": ',
        "|",
        "//",
        "/*",
    ]
)
NUMBERS = st.one_of(
    st.integers(min_value=-1000, max_value=100_000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)
BUILT = st.lists(st.one_of(FRAGMENTS, NUMBERS, st.text(max_size=5)), max_size=60).map("".join)
CRITERIA = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(["Clarity", "Structure", "Argument strength"]), st.text(max_size=12)),
        st.floats(min_value=0, max_value=100),
    ),
    max_size=4,
)


def _assert_valid(evaluation: Evaluation) -> None:
    assert isinstance(evaluation, Evaluation)
    assert evaluation.tier in TIERS
    for score in evaluation.scores.values():
        assert 0 <= score <= 10
    assert evaluation.overall is None or 0 <= evaluation.overall <= 10


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(), criteria=CRITERIA)
def test_any_text_parses_without_raising(text, criteria):
    _assert_valid(parse_evaluation(text, criteria))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=BUILT, criteria=CRITERIA)
def test_score_like_text_parses_without_raising_and_stays_in_range(text, criteria):
    _assert_valid(parse_evaluation(text, criteria))
    document, evaluation = parse_reply(text, criteria)
    assert isinstance(document, str)
    _assert_valid(evaluation)


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.text(), BUILT))
def test_split_output_never_raises(text):
    document, evaluation = split_output(text)
    assert isinstance(document, str)
    assert isinstance(evaluation, str)


# --------------------------------------------------------------------------------------------------
# split_output / parse_reply
# --------------------------------------------------------------------------------------------------

DOC = "# Remote work\n\nRemote work is here to stay.\n\n## Costs\n\nOffices are expensive."


def test_split_takes_the_document_before_the_evaluation_tags():
    reply = f'{DOC}\n\n<evaluation>\n{{"scores": {{"Clarity": 8}}}}\n</evaluation>\n'

    assert split_output(reply) == (DOC, '{"scores": {"Clarity": 8}}')


def test_split_handles_a_stream_cut_before_the_closing_tag():
    reply = f'{DOC}\n<evaluation>\n{{"scores": {{"Clarity": 8'

    assert split_output(reply) == (DOC, '{"scores": {"Clarity": 8')


def test_split_uses_the_last_tag_when_the_document_quotes_one():
    reply = f"Use <evaluation> tags for reviews.\n\n{DOC}\n<EVALUATION>Clarity: 7/10</Evaluation>"

    document, evaluation = split_output(reply)

    assert document == f"Use <evaluation> tags for reviews.\n\n{DOC}"
    assert evaluation == "Clarity: 7/10"


def test_split_drops_an_evaluation_heading_and_rule_before_the_tags():
    reply = f'{DOC}\n\n---\n\n## Evaluation\n<evaluation>{{"Clarity": 8}}</evaluation>'

    assert split_output(reply) == (DOC, '{"Clarity": 8}')


def test_split_finds_a_trailing_json_block_without_tags():
    reply = f'{DOC}\n\n```json\n{{"scores": {{"Clarity": 8}}}}\n```\n'

    assert split_output(reply) == (DOC, '{"scores": {"Clarity": 8}}')


def test_a_json_example_inside_the_document_is_not_an_evaluation():
    reply = f'{DOC}\n\n```json\n{{"port": 8080}}\n```\n\nThat config is all you need.'

    assert split_output(reply) == (reply.strip(), "")


def test_split_finds_a_final_evaluation_section():
    reply = f"{DOC}\n\n## Evaluation\n- Clarity: 8/10\n- Structure: 7/10\n"

    assert split_output(reply) == (DOC, "## Evaluation\n- Clarity: 8/10\n- Structure: 7/10")


def test_split_finds_an_evaluation_colon_line():
    reply = f"{DOC}\n\nEvaluation: Clarity 8/10, Structure 6/10"

    assert split_output(reply) == (DOC, "Evaluation: Clarity 8/10, Structure 6/10")


def test_a_sentence_starting_with_evaluation_is_document_text():
    reply = f"{DOC}\n\nEvaluation of the 2 pilots showed 30% savings."

    assert split_output(reply) == (reply.strip(), "")


def test_split_unwraps_echoed_document_tags_and_markdown_fences():
    tagged = f"<document>\n{DOC}\n</document>\n<evaluation>Clarity: 8/10</evaluation>"
    fenced = f"```markdown\n{DOC}\n```\n<evaluation>Clarity: 8/10</evaluation>"

    assert split_output(tagged) == (DOC, "Clarity: 8/10")
    assert split_output(fenced) == (DOC, "Clarity: 8/10")


def test_split_without_an_evaluation_returns_the_whole_text():
    assert split_output(f"  {DOC}\n\n") == (DOC, "")
    assert split_output("") == ("", "")


def test_parse_reply_splits_and_scores():
    reply = (
        f'{DOC}\n<evaluation>{{"scores": {{"Clarity": 8, "Structure": 6}}, "feedback": "Add numbers."}}</evaluation>'
    )

    document, evaluation = parse_reply(reply, RUBRIC)

    assert document == DOC
    assert evaluation.tier == "json"
    assert evaluation.scores == {"Clarity": 8.0, "Structure": 6.0}
    assert evaluation.feedback == "Add numbers."


def test_parse_reply_does_not_read_document_numbers_as_scores():
    document, evaluation = parse_reply("# Plan\n\nWe hire 3 people in 2 phases over 12 months.", RUBRIC)

    assert document.startswith("# Plan")
    assert evaluation.tier == "none"
    assert evaluation.scores == {}


# --------------------------------------------------------------------------------------------------
# What we ask for
# --------------------------------------------------------------------------------------------------


def test_rubric_instructions_list_criteria_weights_scale_and_format():
    text = rubric_instructions([("Clarity", "Easy to follow", 2.0), ("Tone", "", 1.0)])

    assert "- Clarity (weight 2): Easy to follow" in text
    assert "- Tone (weight 1)" in text
    assert "0 (very poor) to 10 (excellent)" in text
    assert "<evaluation>" in text and "</evaluation>" in text
    assert '"Clarity": <0-10>' in text and '"Tone": <0-10>' in text


def test_rubric_example_filled_in_by_a_model_parses_as_json():
    text = rubric_instructions([("Clarity", "Easy to follow", 2.0), ("Tone", "", 1.0)])
    example = text.split("<evaluation>\n")[1].split("\n</evaluation>")[0]
    filled = example.replace("<0-10>", "7").replace("<what the next agent should improve>", "More data.")

    evaluation = parse_evaluation(filled, [("Clarity", 2.0), ("Tone", 1.0)])

    assert evaluation.tier == "json"
    assert evaluation.scores == {"Clarity": 7.0, "Tone": 7.0}
    assert evaluation.feedback == "More data."


def test_rubric_without_criteria_asks_for_an_overall_score():
    text = rubric_instructions([])

    assert '"overall": <0-10>' in text


# --- Issue 8: decimal commas, other scripts, untagged score lines, <think> blocks ----------------------------


def test_a_thousands_separator_is_not_a_score_but_a_decimal_comma_is():
    from orchestration.evaluation import parse_evaluation

    criteria = [("Clarity", 1), ("Evidence", 1)]
    assert parse_evaluation("Clarity: 8,5/10. Evidence: 7,25/10", criteria).scores == {
        "Clarity": 8.5,
        "Evidence": 7.25,
    }
    assert parse_evaluation("Clarity: 1,000 words read, 8/10", criteria).scores == {"Clarity": 8.0}


def test_trailing_score_lines_split_only_when_they_are_score_lines():
    doc = "# Remote work\n\nThe pilots showed 30% savings.\n\nSurveys: 80% of staff agree."
    assert split_output(doc) == (doc, "")  # prose with percentages is the document
    scored = doc + "\n\nScores:\nClarity: 8/10\nDepth - 7 out of 10"
    assert split_output(scored) == (doc, "Scores:\nClarity: 8/10\nDepth - 7 out of 10")


def test_think_blocks_are_split_from_the_answer_in_every_shape():
    from orchestration.evaluation import split_reasoning

    assert split_reasoning("<think>plan</think>\n# Doc") == ("# Doc", "plan")
    assert split_reasoning("plan</think># Doc") == ("# Doc", "plan")
    assert split_reasoning("<think>cut off while thinking") == ("", "cut off while thinking")
    assert split_reasoning("# Doc without reasoning") == ("# Doc without reasoning", "")
    assert split_reasoning("<THINKING>a</THINKING>\n<think>b</think>Doc") == ("Doc", "a\n\nb")
