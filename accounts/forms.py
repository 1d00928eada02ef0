from __future__ import annotations

import zoneinfo
from functools import cache
from typing import Any

from django import forms
from django.db.models import Q

from accounts.models import Profile
from atelier.core.forms import field_of
from orchestration.models import LLMModel


@cache
def time_zone_choices() -> list[tuple[str, str]]:
    # Only region/city names: the legacy aliases (e.g. "US/Pacific", "EST5EDT") just add noise.
    names = sorted(
        name for name in zoneinfo.available_timezones() if "/" in name and not name.startswith(("Etc/", "SystemV/"))
    )
    return [("UTC", "UTC"), *((name, name.replace("_", " ")) for name in names)]


class ModelChoiceWithProvider(forms.ModelChoiceField[LLMModel]):
    def label_from_instance(self, obj: LLMModel) -> str:
        return f"{obj.get_provider_display()} · {obj.display_name}"


class PreferencesForm(forms.ModelForm[Profile]):
    time_zone = forms.ChoiceField(choices=time_zone_choices, help_text="Times across Atelier are shown in this zone.")
    default_model = ModelChoiceWithProvider(
        queryset=LLMModel.objects.none(),
        required=False,
        empty_label="No preference",
        label="Default model for new agents",
        help_text="Preselected (provider and model) when you add an agent to a team.",
    )

    class Meta:
        model = Profile
        fields = ["display_name", "time_zone", "default_model", "email_on_run_finished"]
        labels = {"display_name": "Display name", "email_on_run_finished": "Email me when a run finishes"}
        help_texts = {"display_name": "Shown in the app instead of your email address.", "email_on_run_finished": ""}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = self.instance.default_model_id
        # Keep a model the user chose earlier selectable even if staff disabled it since.
        field_of(self, "default_model", forms.ModelChoiceField).queryset = LLMModel.objects.filter(
            Q(enabled=True) | Q(pk=current)
        )
        self.fields["display_name"].widget.attrs.update({"autocomplete": "nickname", "maxlength": 80})

    def clean_display_name(self) -> str:
        return " ".join(self.cleaned_data["display_name"].split())
