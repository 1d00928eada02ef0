"""Forms of "Suggest a team": the request (brief, goal, planner) and the editable proposal.

The proposal travels in the form itself (nothing is stored before the user accepts): the edit form is
built from a validated `TeamProposal`, and on accept its fields are turned back into proposal data and
validated again by the same pydantic model (`ProposalForms.proposal_data`).
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.http import QueryDict

from atelier.core.forms import field_of
from orchestration.models import SESSION_FLOW_CHOICES, LLMModel
from orchestration.team_suggestion import MAX_BRIEF_CHARS, MAX_CRITERIA, MAX_GOAL_CHARS, TeamProposal

MAX_EDITED_AGENTS = 10  # the largest plan's team; the plan's own limit is checked by the proposal model


class SuggestRequestForm(forms.Form):
    brief = forms.CharField(
        max_length=MAX_BRIEF_CHARS,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="What the team should write. Prefilled with the session's brief.",
    )
    goal = forms.CharField(
        max_length=MAX_GOAL_CHARS,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="What a good result is: audience, tone, purpose (e.g. “a persuasive op-ed for a city council”).",
    )
    include_document = forms.BooleanField(required=False, initial=True, label="Send the starting document too")
    planner = forms.ChoiceField(label="Planner model")

    def __init__(self, *args: Any, planners: list[LLMModel], default: LLMModel | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.planners = {str(m.pk): m for m in planners}
        field_of(self, "planner", forms.ChoiceField).choices = [(str(m.pk), m.display_name) for m in planners]
        if default is not None:
            self.fields["planner"].initial = str(default.pk)

    def planner_model(self) -> LLMModel | None:
        cleaned = getattr(self, "cleaned_data", None) or {}
        return self.planners.get(str(cleaned.get("planner") or self.data.get("planner") or ""))


class ProposalSettingsForm(forms.Form):
    flow = forms.ChoiceField(choices=SESSION_FLOW_CHOICES)
    max_rounds = forms.IntegerField(min_value=1, max_value=50)
    score_threshold = forms.FloatField(required=False, min_value=0, max_value=10, label="Score threshold (0-10)")
    convergence_percent = forms.FloatField(required=False, label="Stop when a round changes less than (%)")
    stop_when_no_high_issues = forms.BooleanField(required=False, label="Roundtable: stop when no high issues are left")
    stop_below_change_percent = forms.FloatField(required=False, label="Roundtable: stop below this change (%)")
    rationale = forms.CharField(required=False, widget=forms.HiddenInput, max_length=2000)
    brief = forms.CharField(required=False, widget=forms.HiddenInput, max_length=MAX_BRIEF_CHARS)
    agent_count = forms.IntegerField(widget=forms.HiddenInput, min_value=1, max_value=MAX_EDITED_AGENTS)
    confirm_replace = forms.BooleanField(required=False)

    def __init__(self, *args: Any, allowed_flows: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if allowed_flows is not None:  # locked flows stay visible, labelled; the server refuses them anyway
            field_of(self, "flow", forms.ChoiceField).choices = [
                (value, label if value in allowed_flows else f"{label} (not on your plan)")
                for value, label in SESSION_FLOW_CHOICES
            ]


class AgentProposalForm(forms.Form):
    keep = forms.BooleanField(required=False, initial=True, label="Keep this agent")
    name = forms.CharField(max_length=80)
    role = forms.CharField(max_length=40)
    model = forms.ChoiceField()
    role_prompt = forms.CharField(max_length=20_000, widget=forms.Textarea(attrs={"rows": 4}), label="Role prompt")

    def __init__(self, *args: Any, models: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field_of(self, "model", forms.ChoiceField).choices = models


class CriterionProposalForm(forms.Form):
    name = forms.CharField(required=False, max_length=60, label="Criterion")
    description = forms.CharField(required=False, max_length=500)
    weight = forms.FloatField(required=False, min_value=0.01, max_value=100)


class ProposalForms:
    """The settings form, one form per agent and its criterion rows (one blank row more to add one)."""

    def __init__(
        self,
        *,
        data: QueryDict | None = None,
        proposal: TeamProposal | None = None,
        brief: str = "",
        model_choices: list[tuple[str, str]],
        allowed_flows: list[str] | None = None,
    ) -> None:
        self.data = data
        if data is None and proposal is not None:
            initial = {
                "flow": proposal.flow,
                **proposal.termination.model_dump(),
                "rationale": proposal.rationale,
                "brief": brief,
                "agent_count": len(proposal.agents),
            }
            self.settings = ProposalSettingsForm(initial=initial, allowed_flows=allowed_flows)
            count = len(proposal.agents)
        else:
            assert data is not None, "ProposalForms needs the posted data or a proposal"
            self.settings = ProposalSettingsForm(data, allowed_flows=allowed_flows)
            count = _bounded(data.get("agent_count"), MAX_EDITED_AGENTS)
        self.agents: list[tuple[AgentProposalForm, list[CriterionProposalForm]]] = []
        for i in range(count):
            spec = proposal.agents[i] if data is None and proposal is not None else None
            agent_initial = {"keep": True, **spec.model_dump(exclude={"criteria"})} if spec else None
            agent = AgentProposalForm(data, prefix=f"a{i}", initial=agent_initial, models=model_choices)
            if spec:
                rows = len(spec.criteria) + 1
            else:
                assert data is not None  # no spec: the forms are bound to the posted data (asserted above)
                rows = _bounded(data.get(f"a{i}-criteria_count"), MAX_CRITERIA + 1)
            criteria = [
                CriterionProposalForm(
                    data,
                    prefix=f"a{i}-c{j}",
                    initial=spec.criteria[j].model_dump() if spec and j < len(spec.criteria) else None,
                )
                for j in range(rows)
            ]
            self.agents.append((agent, criteria))

    def is_valid(self) -> bool:
        forms_ok = self.settings.is_valid()
        for agent, criteria in self.agents:
            forms_ok = agent.is_valid() and forms_ok
            for row in criteria:
                forms_ok = row.is_valid() and forms_ok
        return forms_ok

    def proposal_data(self) -> dict[str, Any]:
        """The edited proposal as TeamProposal input (call after is_valid); dropped agents and blank rows left out."""
        s = self.settings.cleaned_data
        agents = []
        for agent, criteria in self.agents:
            a = agent.cleaned_data
            if not a.get("keep"):
                continue
            rows = [c.cleaned_data for c in criteria if (c.cleaned_data.get("name") or "").strip()]
            agents.append(
                {
                    "name": a["name"],
                    "role": a["role"],
                    "model": a["model"],
                    "role_prompt": a["role_prompt"],
                    "criteria": [
                        {"name": r["name"], "description": r.get("description") or "", "weight": r.get("weight") or 1.0}
                        for r in rows
                    ],
                }
            )
        return {
            "flow": s["flow"],
            "rationale": s.get("rationale") or "",
            "agents": agents,
            "termination": {
                "max_rounds": s["max_rounds"],
                "score_threshold": s.get("score_threshold"),
                "convergence_percent": s.get("convergence_percent"),
                "stop_when_no_high_issues": bool(s.get("stop_when_no_high_issues")),
                "stop_below_change_percent": s.get("stop_below_change_percent"),
            },
        }

    def error_count(self) -> int:
        return len(self.settings.errors) + sum(
            len(agent.errors) + sum(len(c.errors) for c in criteria) for agent, criteria in self.agents
        )


def _bounded(value: Any, maximum: int) -> int:
    try:
        return max(0, min(int(value), maximum))
    except (TypeError, ValueError):
        return 0


def readable_errors(errors: list[str], agent_names: list[str]) -> list[str]:
    """Pydantic locations in words: "agents.1.criteria.0.weight: ..." -> "Line editor, criterion 1 weight: ..."."""

    def agent_label(match: re.Match[str]) -> str:
        index = int(match.group(1))
        name = agent_names[index] if index < len(agent_names) and agent_names[index] else f"Agent {index + 1}"
        return f"{name}, "

    readable = []
    for line in errors:
        line = re.sub(r"^agents\.(\d+)\.", agent_label, line)
        line = re.sub(r"criteria\.(\d+)\.", lambda m: f"criterion {int(m.group(1)) + 1} ", line)
        line = re.sub(r"^termination\.", "", line)
        readable.append(line.replace("_", " "))
    return readable
