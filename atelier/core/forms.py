"""Form helpers shared by the apps."""

from __future__ import annotations

from typing import TypeVar

from django import forms

_F = TypeVar("_F", bound=forms.Field)


def field_of(form: forms.BaseForm, name: str, kind: type[_F]) -> _F:
    """``form.fields[name]``, checked to be a `kind` (ChoiceField, ModelChoiceField...) so its own
    attributes (``choices``, ``queryset``...) can be set with their types known.

    Raises KeyError for an unknown field and TypeError when the field is of another kind (a
    programming error: the form's declaration and its ``__init__`` disagree).
    """
    field = form.fields[name]
    if not isinstance(field, kind):
        raise TypeError(f"{type(form).__name__}.{name} is a {type(field).__name__}, not a {kind.__name__}")
    return field
