"""Forms of a conversation's team page: the conversation's settings, one agent, and "Add a specialist".

They validate field values (lengths, ranges, models the plan allows, like the session builder's pickers);
the services in orchestration.conversations.services enforce what needs the database (ownership, a reply
being written, the plan's specialists per conversation, unique names).
"""

from __future__ import annotations

from typing import Any

from django import forms

from orchestration.conversations import presets
from orchestration.conversations.services import MAX_HANDOFFS_LIMIT, MAX_TITLE_CHARS, tool_key
from orchestration.conversations.tools import INFO_TOOL_CHOICES
from orchestration.forms import CatalogueModelField, check_model_choice
from orchestration.models import Agent, LLMModel

MAX_PROMPT_CHARS = 20_000  # Agent.role_prompt's max_length
MAX_NAME_CHARS = 80


class ConversationSettingsForm(forms.Form):
    """Title and handoffs per message."""

    title = forms.CharField(max_length=MAX_TITLE_CHARS, error_messages={"required": "Give the conversation a title."})
    max_handoffs = forms.IntegerField(
        min_value=0,
        max_value=MAX_HANDOFFS_LIMIT,
        label="Handoffs per message",
        help_text=f"How many times agents may pass one message on (0 to {MAX_HANDOFFS_LIMIT}); then the agent "
        "holding it answers.",
        error_messages={"required": "Say how many handoffs a message may take (0 for none)."},
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["max_handoffs"].widget.attrs.update(min="0", max=str(MAX_HANDOFFS_LIMIT))


class TeamAgentForm(forms.Form):
    """One agent of the team: name, model and fallback, role prompt, the information tools it may call."""

    name = forms.CharField(max_length=MAX_NAME_CHARS, error_messages={"required": "Name this agent."})
    model = CatalogueModelField(queryset=LLMModel.objects.all(), empty_label=None)
    fallback_model = CatalogueModelField(
        queryset=LLMModel.objects.all(),
        required=False,
        empty_label="No fallback",
        help_text="Used when the main model keeps failing.",
    )
    role_prompt = forms.CharField(
        label="Role prompt",
        max_length=MAX_PROMPT_CHARS,
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="Its first sentence after “You are …” is what teammates read about this agent.",
        error_messages={"required": "Write the agent's role prompt."},
    )
    tools = forms.MultipleChoiceField(
        choices=INFO_TOOL_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Tools it may use",
        help_text="Handoffs to teammates are always offered. A model without tool calling gets no tools.",
    )

    def __init__(self, *args: Any, user: Any, agent: Agent, team: list[Agent], **kwargs: Any) -> None:
        if not kwargs.get("data") and not (args and args[0]):
            kwargs.setdefault(
                "initial",
                {
                    "name": agent.name,
                    "model": agent.model_id,
                    "fallback_model": agent.fallback_model_id,
                    "role_prompt": agent.role_prompt,
                    "tools": [name for name, _ in INFO_TOOL_CHOICES] if agent.tools is None else list(agent.tools),
                },
            )
        kwargs.setdefault("prefix", f"agent-{agent.pk}")
        super().__init__(*args, **kwargs)
        self.user, self.agent, self.team = user, agent, team

    def clean_name(self) -> str:
        name = " ".join(self.cleaned_data["name"].split())
        key = tool_key(Agent(name=name, pk=self.agent.pk))
        for other in self.team:
            if other.pk != self.agent.pk and tool_key(other) == key:
                raise forms.ValidationError(f"“{other.name}” already has that name in this team. Pick another name.")
        return name

    def clean_model(self) -> LLMModel | None:
        return check_model_choice(self.user, self.cleaned_data.get("model"))

    def clean_fallback_model(self) -> LLMModel | None:
        return check_model_choice(self.user, self.cleaned_data.get("fallback_model"))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("fallback_model") and data.get("fallback_model") == data.get("model"):
            self.add_error("fallback_model", "The fallback must be a different model.")
        return data


class AddSpecialistForm(forms.Form):
    kind = forms.ChoiceField(
        choices=[(key, spec["label"]) for key, spec in presets.SPECIALIST_KINDS.items()],
        initial="blank",
        label="Kind",
        error_messages={"invalid_choice": "Pick a kind of specialist from the list."},
    )
