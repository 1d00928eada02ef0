"""Forms of the studio: projects, the session builder, agents and their criteria, references."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django import forms
from django.forms import inlineformset_factory

from atelier.core.forms import field_of
from orchestration import reasoning
from orchestration.catalogue import temperature_help
from orchestration.models import (
    SESSION_FLOW_CHOICES,
    Agent,
    Criterion,
    Flow,
    LLMModel,
    Project,
    Reasoning,
    ReasoningEffort,
    Status,
    TeamPreset,
    WritingSession,
)
from orchestration.uploads import MAX_UPLOAD_FILES

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from billing.gating import Gate

logger = logging.getLogger(__name__)


# --- Gating, pricing and balance: owned by billing (imported where used: billing's modules import
# orchestration's models).


def gate(user: User, action: str, **context: Any) -> Gate:
    """billing.gating.check: whether the user's plan allows `action` (with the reason and upgrade link)."""
    from billing.gating import check

    return check(user, action, **context)


def credit_estimate(session: WritingSession) -> tuple[int, int] | str:
    """(low, high) credits for the run, or a message when the team cannot be priced yet."""
    from billing.pricing import estimate_session_credits

    try:
        return estimate_session_credits(session)
    except Exception as exc:  # noqa: BLE001 - an unpriced model must not break the builder; say why instead
        logger.info("estimate failed for session %s: %s", session.pk, exc)
        return str(exc) or "The team cannot be priced yet."


def credit_balance(user: User) -> int:
    """The user's credit balance (billing.services.get_balance)."""
    from billing.services import get_balance

    return get_balance(user)


# --- Choices shown with prices and plan locks


@dataclass(frozen=True)
class ModelOption:
    model: LLMModel
    label: str
    locked: bool
    reason: str
    upgrade_url: str
    unavailable: bool = False  # its provider is not connected on this server (not a plan matter)


def _price(value: Decimal | None) -> str:
    return "—" if value is None else f"${value.normalize():f}" if value == value.to_integral() else f"${value:.2f}"


def model_label(model: LLMModel) -> str:
    if not model.is_priced:
        return f"{model.display_name} · not priced"
    from billing.pricing import credits_for_usage

    # What a typical call costs in the unit users pay in: 1k tokens in and 1k out.
    typical = credits_for_usage(model=model, input_tokens=1000, cached_tokens=0, output_tokens=1000)
    per_call = f"{typical} credit{'s' if typical != 1 else ''} per 1k in + 1k out"
    multiplier = f"×{model.credit_multiplier.normalize():f}"
    if model.is_demo:
        return f"{model.display_name} · offline demo, not a language model · {per_call} ({multiplier})"
    prices = f"{_price(model.input_price_per_mtok)} in / {_price(model.output_price_per_mtok)} out per Mtok"
    thinks = {"thinking_budget": " · extended thinking", "effort": " · reasoning model"}.get(model.reasoning, "")
    return f"{model.display_name}{thinks} · {prices} · {per_call} ({multiplier})"


def model_options(user: User) -> list[ModelOption]:
    """Enabled catalogue models; those the plan does not include, or whose provider is not connected on
    this server, stay visible but locked, with the reason (never an environment variable name)."""
    from orchestration.providers import provider_available

    options = []
    availability: dict[str, tuple[bool, str]] = {}
    for model in LLMModel.objects.filter(enabled=True):
        reason, upgrade_url = "", ""
        if model.provider not in availability:
            availability[model.provider] = provider_available(model.provider)
        available, why = availability[model.provider]
        if not available:
            options.append(ModelOption(model, model_label(model), True, why, "", unavailable=True))
            continue
        if not model.is_priced:
            reason = "This model has no price yet and cannot be used."
        else:
            verdict = gate(user, "use_model", model=model)
            if not verdict.allowed:
                reason, upgrade_url = verdict.reason or "Not on your plan.", verdict.upgrade_url
        options.append(ModelOption(model, model_label(model), bool(reason), reason, upgrade_url))
    return options


@dataclass(frozen=True)
class FlowOption:
    value: str
    label: str
    locked: bool
    reason: str
    upgrade_url: str
    description: str = ""
    diagram: str = ""
    roles: str = ""  # the roles the flow gives parts to, as the builder's role field expects them


FLOW_ROLES: dict[str, str] = {
    Flow.SEQUENTIAL: "any roles; every agent revises in turn",
    Flow.EDITORIAL: "one “writer”, one or more “editor”s, one “synthesizer”",
    Flow.ROUNDTABLE: "one or more “critic”s, one “moderator”",
    Flow.PIPELINE: "one “researcher”, one “planner”, one “builder”, one “reviewer”",
}


def flow_options(user: User) -> list[FlowOption]:
    """Every flow with its one-line description, diagram, roles and whether the user's plan allows it."""
    from orchestration.flows import get_policy

    options = []
    for value, label in SESSION_FLOW_CHOICES:
        verdict = gate(user, "use_flow", flow=value)
        policy = get_policy(value)
        options.append(
            FlowOption(
                value,
                label,
                not verdict.allowed,
                verdict.reason,
                verdict.upgrade_url,
                description=policy.description,
                diagram=policy.diagram,
                roles=FLOW_ROLES.get(value, ""),
            )
        )
    return options


# --- Projects


class ProjectForm(forms.ModelForm[Project]):
    class Meta:
        model = Project
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}


class NewSessionForm(forms.Form):
    title = forms.CharField(max_length=200)
    preset = forms.ChoiceField(required=False, label="Team", help_text="Start from a preset or with a blank team.")

    def __init__(self, *args: Any, presets: Iterable[TeamPreset] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.presets = {str(p.pk): p for p in presets}
        field_of(self, "preset", forms.ChoiceField).choices = [("", "Blank team")] + [
            (pk, p.name) for pk, p in self.presets.items()
        ]

    def clean_preset(self) -> TeamPreset | None:
        value = self.cleaned_data["preset"]
        return self.presets.get(value) if value else None


# --- The session builder


class SessionSettingsForm(forms.ModelForm[WritingSession]):
    class Meta:
        model = WritingSession
        fields = [
            "title",
            "flow",
            "brief",
            "document",
            "max_rounds",
            "score_threshold",
            "threshold_agent",
            "convergence_percent",
            "credit_budget",
        ]
        labels = {
            "document": "Starting document",
            "threshold_agent": "Whose score counts",
            "convergence_percent": "Convergence (%)",
            "credit_budget": "Credit budget",
        }
        help_texts = {
            "document": "Optional. The team revises this instead of starting from nothing.",
            "credit_budget": "Optional. Stop after spending this many credits.",
        }
        widgets = {
            "brief": forms.Textarea(attrs={"rows": 5}),
            "document": forms.Textarea(attrs={"rows": 6}),
            "flow": forms.RadioSelect,
        }

    # The roundtable's convergence rules (WritingSession.flow_config); always posted, used by that flow only.
    stop_when_no_high_issues = forms.BooleanField(
        required=False, initial=True, label="Stop when no high-severity issues are left"
    )
    stop_below_change_percent = forms.FloatField(
        required=False,
        min_value=0.1,
        max_value=100,
        label="Stop when the moderator changes less than (%)",
        help_text="Empty turns this rule off. Max rounds is the last rule.",
    )

    # The pipeline's settings (flows/pipeline.py); always posted, used by that flow only.
    pipeline_passages = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=20,
        label="Passages to research",
        help_text="How many passages of your references the researcher reads (found by full-text search).",
    )
    pipeline_format = forms.ChoiceField(required=False, label="Format")
    pipeline_tone = forms.ChoiceField(required=False, label="Tone")
    pipeline_length_words = forms.IntegerField(required=False, min_value=100, max_value=10_000, label="Length (words)")
    pipeline_revise_below = forms.FloatField(
        required=False,
        min_value=0.1,
        max_value=10,
        label="Build again when the review scores under",
        help_text="Empty: never build again. Max rounds caps the builds.",
    )
    # The planned flow's settings (WritingSession.flow_config; orchestration/flows/planned.py clean_config).
    approve_plan = forms.BooleanField(
        required=False, initial=False, label="Pause for me to approve the plan before the tasks run"
    )
    max_repairs = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=3,
        initial=1,
        label="Repairs per task",
        help_text="Repair calls with the verifier's notes before the next-best model is tried.",
    )
    min_words = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=5000,
        initial=20,
        label="Minimum words per task",
        help_text="A task output shorter than this fails the rule check before the verifier reads it.",
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        from orchestration.flows import planned
        from orchestration.flows.roundtable import DEFAULT_CONFIG, ConfigError, clean_config

        super().__init__(*args, **kwargs)
        field_of(self, "flow", forms.ChoiceField).choices = SESSION_FLOW_CHOICES
        planned_config = planned.session_config(self.instance) if self.instance.flow == Flow.PLANNED else {}
        planned_config = {**planned.DEFAULT_CONFIG, **planned_config}
        for name in ("approve_plan", "max_repairs", "min_words"):
            self.fields[name].initial = planned_config[name]
        try:
            config = clean_config(self.instance.flow_config)
        except ConfigError:
            config = dict(DEFAULT_CONFIG)
        self.fields["stop_when_no_high_issues"].initial = config["stop_when_no_high_issues"]
        self.fields["stop_below_change_percent"].initial = config["stop_below_change_percent"]
        self.fields["stop_below_change_percent"].widget.attrs.update(step="0.5", min="0.1", max="100")
        self._init_pipeline_fields()
        self.user = user
        # A draft may be incomplete; starting checks the brief (services.validate_for_start).
        self.fields["brief"].required = False
        # An attribute of our own, read by the field template: shown as needed to start, not as "optional".
        self.fields["brief"].needed_to_start = True  # type: ignore[attr-defined]
        self.starting_document = None
        if self.instance.pk and self.instance.status != Status.DRAFT:
            # Once a session has run, WritingSession.document is the engine's working document: the
            # builder shows the starting document read-only (as Duplicate copies it) and never saves it.
            from orchestration.presets import starting_document

            del self.fields["document"]
            self.starting_document = starting_document(self.instance)
        threshold_agent = field_of(self, "threshold_agent", forms.ModelChoiceField)
        threshold_agent.queryset = Agent.objects.filter(session=self.instance)
        threshold_agent.empty_label = "Any agent"
        self.fields["score_threshold"].widget.attrs.update(step="0.1", min="0", max="10")
        self.fields["convergence_percent"].widget.attrs.update(step="0.5", min="0", max="100")

    def _init_pipeline_fields(self) -> None:
        from orchestration.flows import pipeline

        try:
            config = pipeline.clean_config(self.instance.flow_config if self.instance.flow == Flow.PIPELINE else {})
        except pipeline.ConfigError:
            config = dict(pipeline.DEFAULT_CONFIG)
        field_of(self, "pipeline_format", forms.ChoiceField).choices = [(f, f.capitalize()) for f in pipeline.FORMATS]
        field_of(self, "pipeline_tone", forms.ChoiceField).choices = [(t, t.capitalize()) for t in pipeline.TONES]
        for key in pipeline.DEFAULT_CONFIG:
            self.fields[f"pipeline_{key}"].initial = config[key]
        self.fields["pipeline_revise_below"].widget.attrs.update(step="0.1", min="0.1", max="10")

    def _clean_pipeline(self, cleaned: dict[str, Any]) -> None:
        from orchestration.flows import pipeline

        names = [f"pipeline_{key}" for key in pipeline.DEFAULT_CONFIG]
        if any(name in self.errors for name in names):
            return
        raw = {key: cleaned.get(f"pipeline_{key}") for key in pipeline.DEFAULT_CONFIG}
        for key in ("passages", "length_words", "format", "tone"):  # empty means the default
            if raw[key] in (None, ""):
                raw[key] = pipeline.DEFAULT_CONFIG[key]
        try:
            self.instance.flow_config = pipeline.clean_config(raw)
        except pipeline.ConfigError as error:
            self.add_error(None, str(error))

    def clean(self) -> dict[str, Any]:
        from orchestration.flows.roundtable import ConfigError, clean_config

        super().clean()
        cleaned = self.cleaned_data  # what Form.clean() returns (django-stubs allows None)
        if cleaned.get("flow") == Flow.PIPELINE:
            self._clean_pipeline(cleaned)
        if cleaned.get("flow") == Flow.ROUNDTABLE and "stop_below_change_percent" not in self.errors:
            raw = {
                "stop_when_no_high_issues": bool(cleaned.get("stop_when_no_high_issues")),
                "stop_below_change_percent": cleaned.get("stop_below_change_percent"),
            }
            try:
                self.instance.flow_config = clean_config(raw)
            except ConfigError as error:
                self.add_error("stop_below_change_percent", str(error))
        if cleaned.get("flow") == Flow.PLANNED and not {"max_repairs", "min_words"} & set(self.errors):
            from orchestration.flows import planned

            raw = {
                "approve_plan": bool(cleaned.get("approve_plan")),
                "max_repairs": 1 if cleaned.get("max_repairs") is None else cleaned["max_repairs"],
                "min_words": 20 if cleaned.get("min_words") is None else cleaned["min_words"],
            }
            try:
                self.instance.flow_config = planned.clean_config(raw)
            except planned.ConfigError as error:
                self.add_error("max_repairs", str(error))
        return cleaned

    def save(self, commit: bool = True) -> WritingSession:
        """Write only this form's fields, through services.save_session_settings (never the whole
        row: status, sequence counters and totals belong to the engine). ``self.saved`` is False
        when nothing was written because the session is running."""
        from orchestration.services import save_session_settings

        session = super().save(commit=False)
        if commit:
            fields = [f for f in (self._meta.fields or ()) if f in self.cleaned_data]
            if self.cleaned_data.get("flow") in (Flow.ROUNDTABLE, Flow.PIPELINE, Flow.PLANNED):
                fields.append("flow_config")  # set by clean() from the flow's own fields
            self.saved = save_session_settings(session=session, changes={f: getattr(session, f) for f in fields})
        return session

    def clean_flow(self) -> str:
        flow: str = self.cleaned_data["flow"]
        if flow == Flow.CONVERSATION:
            raise forms.ValidationError("Conversations are started from a project's Conversations page.")
        if flow != self.instance.flow or self.instance.status == Status.DRAFT:
            verdict = gate(self.user, "use_flow", flow=flow)
            if not verdict.allowed:
                raise forms.ValidationError(verdict.reason or "This flow is not on your plan. Upgrade to use it.")
        return flow


class CatalogueModelField(forms.ModelChoiceField[LLMModel]):
    """Any catalogue row, so a disabled or unpriced model gets a precise error instead of "invalid choice"."""

    default_error_messages = {"invalid_choice": "Unknown model. Pick one from the list."}

    def label_from_instance(self, obj: LLMModel) -> str:
        return model_label(obj)


def check_model_choice(user: User, model: LLMModel | None) -> LLMModel | None:
    """A picked model, or a ValidationError saying why it cannot be used: disabled, unpriced, or not on
    the user's plan (the same rule as the builder's pickers; None passes for an optional field)."""
    if model is None:
        return None
    if not model.enabled:
        raise forms.ValidationError(f"{model.display_name} is disabled. Pick another model.")
    if not model.is_priced:
        raise forms.ValidationError(f"{model.display_name} has no price yet and cannot be used.")
    verdict = gate(user, "use_model", model=model)
    if not verdict.allowed:
        raise forms.ValidationError(verdict.reason or f"{model.display_name} is not on your plan. Upgrade to use it.")
    return model


class AgentForm(forms.ModelForm[Agent]):
    model = CatalogueModelField(queryset=LLMModel.objects.all(), empty_label=None)
    fallback_model = CatalogueModelField(
        queryset=LLMModel.objects.all(),
        required=False,
        empty_label="No fallback",
        help_text="Used when the main model keeps failing.",
    )
    # Shown only for models with the matching catalogue capability (partials/agent_reasoning.html); a
    # control that is not shown is not posted, so both are optional and fall back to "off".
    thinking_budget_tokens = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=63_000,
        label="Thinking budget (tokens)",
        help_text=reasoning.THINKING_HELP + " 0 turns thinking off.",
    )
    reasoning_effort = forms.ChoiceField(
        required=False, choices=ReasoningEffort.choices, label="Reasoning effort", help_text=reasoning.EFFORT_HELP
    )

    class Meta:
        model = Agent
        fields = [
            "name",
            "role",
            "model",
            "fallback_model",
            "role_prompt",
            "temperature",
            "max_output_tokens",
            "thinking_budget_tokens",
            "reasoning_effort",
        ]
        labels = {"max_output_tokens": "Max output tokens", "role_prompt": "Role prompt"}
        widgets = {"role_prompt": forms.Textarea(attrs={"rows": 5})}

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["temperature"].widget.attrs.update(step="0.1", min="0", max="2")
        self.fields["max_output_tokens"].widget.attrs.update(min="64", max="64000")
        self.fields["thinking_budget_tokens"].widget.attrs.update(min="0", step="1024")
        # Temperature does not reach every model (Anthropic, OpenAI reasoning models): say so per model.
        current = self.instance.model if self.instance.pk and self.instance.model_id else None
        choosable = field_of(self, "model", forms.ModelChoiceField).queryset
        assert choosable is not None  # a model form's foreign-key field always has one
        offered = choosable.filter(enabled=True)
        self.fields["temperature"].help_text = temperature_help(current, offered)

    def _check_model(self, model: LLMModel | None) -> LLMModel | None:
        return check_model_choice(self.user, model)

    def clean_model(self) -> LLMModel | None:
        return self._check_model(self.cleaned_data.get("model"))

    def clean_fallback_model(self) -> LLMModel | None:
        return self._check_model(self.cleaned_data.get("fallback_model"))

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what Form.clean() returns (django-stubs allows None)
        if data.get("fallback_model") and data.get("fallback_model") == data.get("model"):
            self.add_error("fallback_model", "The fallback must be a different model.")
        self._clean_reasoning(data)
        return data

    def _clean_reasoning(self, data: dict[str, Any]) -> None:
        """Keep only the reasoning control the chosen model has, and check the API's rules for it."""
        model = data.get("model")
        budget = data.get("thinking_budget_tokens") or 0
        effort = data.get("reasoning_effort") or ""
        # The builder hides a control the model does not have: whatever it held is not sent, so drop it.
        if model is None or model.reasoning != Reasoning.THINKING_BUDGET:
            budget = 0
        if model is None or model.reasoning != Reasoning.EFFORT:
            effort = ""
        data["thinking_budget_tokens"], data["reasoning_effort"] = budget, effort
        if model is None or data.get("max_output_tokens") is None:
            return
        problems = reasoning.validate(
            model=model,
            max_output_tokens=data["max_output_tokens"],
            thinking_budget=budget,
            reasoning_effort=effort,
        )
        for field, message in problems.items():
            self.add_error(field, message)


class CriterionForm(forms.ModelForm[Criterion]):
    class Meta:
        model = Criterion
        fields = ["name", "weight", "description"]
        error_messages = {
            "weight": {"required": "Give this criterion a weight."},
            "name": {"required": "Name this criterion."},
        }
        widgets = {"description": forms.TextInput(attrs={"placeholder": "What a good score means"})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["weight"].widget.attrs.update(step="0.1", min="0.01", max="100")


CriterionFormSet = inlineformset_factory(
    Agent, Criterion, form=CriterionForm, extra=0, can_delete=True, max_num=12, validate_max=True
)


class ReferenceForm(forms.Form):
    """Paste a reference, upload files, or both."""

    title = forms.CharField(max_length=200, required=False)
    content = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), required=False, max_length=200_000)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Same field names as the session settings form ("title"): distinct ids keep every label and
        # id on the builder page unique.
        kwargs.setdefault("auto_id", "id_reference_%s")
        super().__init__(*args, **kwargs)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data  # what Form.clean() returns (django-stubs allows None)
        if data.get("content", "").strip() and not data.get("title", "").strip():
            data["title"] = data["content"].strip().splitlines()[0][:80]
        return data


class PresetSaveForm(forms.Form):
    name = forms.CharField(max_length=120, label="Preset name", error_messages={"required": "Give the preset a name."})
    description = forms.CharField(max_length=500, required=False)
    replace = forms.BooleanField(required=False, label="Replace my preset with this name")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "id_preset_%s")  # the settings form has its own name/title fields
        super().__init__(*args, **kwargs)
        self.name_taken = False


__all__ = [
    "MAX_UPLOAD_FILES",
    "AgentForm",
    "CriterionFormSet",
    "NewSessionForm",
    "PresetSaveForm",
    "ProjectForm",
    "ReferenceForm",
    "SessionSettingsForm",
    "credit_balance",
    "credit_estimate",
    "flow_options",
    "gate",
    "model_options",
]
