"""What the builder's views share: the guard that keeps a running session's builder read-only, the
responses that say so, the contexts each part of the page renders with, and the save helpers.

The builder's views are split by the part of the page they serve: builder.py (the page, settings, Start),
builder_team.py (agents and presets), builder_references.py (reference documents).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from django.contrib import messages
from django.forms import BaseForm
from django.forms.utils import ErrorDict
from django.http import HttpResponse, QueryDict
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django_htmx.http import reswap, trigger_client_event

from atelier.core.http import AuthenticatedHttpRequest, htmx_redirect
from orchestration import presets, team
from orchestration.forms import (
    AgentForm,
    CriterionFormSet,
    PresetSaveForm,
    ReferenceForm,
    SessionSettingsForm,
    credit_balance,
    credit_estimate,
    flow_options,
    gate,
    model_options,
)
from orchestration.models import ACTIVE_STATUSES, Agent, WritingSession
from orchestration.uploads import MAX_UPLOAD_BYTES, MAX_UPLOAD_FILES
from orchestration.views.access import _get_session_for_user

if TYPE_CHECKING:
    from django.forms.models import BaseInlineFormSet

    from orchestration.forms import CriterionForm
    from orchestration.models import Criterion

    CriteriaFormSet = BaseInlineFormSet[Criterion, Agent, CriterionForm]

PAGE = "orchestration/builder.html"

# A builder view after the guard: it gets the owner's draft (not running) instead of its id.
DraftView = Callable[..., HttpResponse]


# --- the guard: a running session's builder is read-only


def draft_only(*, autosave: bool) -> Callable[[DraftView], DraftView]:
    """Decorate a builder view that writes: it is called as ``view(request, session, **url_kwargs)`` with
    the owner's session (a 404 for anyone else's) when that session is not running; a running one gets
    `running_response(request, session, autosave=autosave)` instead. ``autosave`` marks the views the
    page's autosaves call (settings, agent cards), which may arrive just after Start.

    The check is a quick answer for the page: the team service re-checks under the session's row lock
    (ServiceError), and views answer a ServiceError raised for that race with `running_response` too."""

    def decorate(view: DraftView) -> DraftView:
        @functools.wraps(view)
        def guarded(request: AuthenticatedHttpRequest, pk: int, **kwargs: Any) -> HttpResponse:
            session = _get_session_for_user(request, pk)
            if session.status in ACTIVE_STATUSES:
                return running_response(request, session, autosave=autosave)
            return view(request, session, **kwargs)

        return guarded

    return decorate


def running_response(request: AuthenticatedHttpRequest, session: WritingSession, *, autosave: bool) -> HttpResponse:
    """The answer to a write on a running session: to the live page, with a message saying why.

    An autosave (``autosave``, an htmx POST) that fires after Start (its debounce outlived the click) has
    nothing left to do: Start saved the same form first. It gets 204 so htmx leaves the page alone, with no
    stray message."""
    if autosave and request.htmx and request.method == "POST":
        return HttpResponse(status=204)
    messages.info(request, "This session is running. Pause or stop it from the live page first.")
    return htmx_redirect(request, reverse("session_detail", args=[session.pk]))


# --- contexts and save helpers


def _agent_prefix(agent: Agent) -> str:
    return f"agent-{agent.pk}"


def _agent_forms(
    request: AuthenticatedHttpRequest, agent: Agent, data: QueryDict | None = None, extra_criteria: int = 0
) -> tuple[AgentForm, CriteriaFormSet]:
    """The agent card's form and criteria formset, bound to `data` if given; unbound with `extra_criteria`
    blank rows otherwise."""
    prefix = _agent_prefix(agent)
    form = AgentForm(data, instance=agent, prefix=prefix, user=request.user)
    formset = CriterionFormSet(data, instance=agent, prefix=f"{prefix}-criteria")
    if data is None and extra_criteria:
        formset.extra = extra_criteria
        formset.forms  # noqa: B018 - build forms now that extra changed
    return form, formset


def _card(agent: Agent, form: AgentForm, formset: CriteriaFormSet, *, index: int, count: int) -> dict[str, Any]:
    """What the agent card partial renders: the agent, its forms, and its place among `count` cards."""
    return {
        "agent": agent,
        "form": form,
        "formset": formset,
        "is_first": index == 0,
        "is_last": index == count - 1,
        "number": index + 1,
    }


def _agent_card_context(
    request: AuthenticatedHttpRequest,
    session: WritingSession,
    agent: Agent,
    form: AgentForm,
    formset: CriteriaFormSet,
    **extra: Any,
) -> dict[str, Any]:
    agents = list(session.agents.order_by("order", "pk").values_list("pk", flat=True))
    index = agents.index(agent.pk) if agent.pk in agents else 0
    return {
        "session": session,
        "card": _card(agent, form, formset, index=index, count=len(agents)),
        **_model_context(request),
        **extra,
    }


def _team_context(request: AuthenticatedHttpRequest, session: WritingSession) -> dict[str, Any]:
    agents = list(session.agents.select_related("model", "fallback_model").prefetch_related("criteria"))
    cards = [
        _card(agent, *_agent_forms(request, agent), index=index, count=len(agents))
        for index, agent in enumerate(agents)
    ]
    agent_gate = gate(request.user, "create_agent", agents=len(agents) + 1)
    return {
        "session": session,
        "cards": cards,
        "agent_gate": agent_gate,
        "presets": presets.presets_for(request.user),
        **_model_context(request),
    }


def _model_context(request: AuthenticatedHttpRequest) -> dict[str, Any]:
    options = model_options(request.user)
    upgrade = next((o.upgrade_url for o in options if o.locked and o.upgrade_url), "")
    return {"model_options": options, "model_upgrade_url": upgrade}


def _estimate_context(session: WritingSession) -> dict[str, Any]:
    estimate = credit_estimate(session)
    return {
        "session": session,
        "estimate": estimate if isinstance(estimate, tuple) else None,
        "estimate_problem": estimate if isinstance(estimate, str) else "",
        "estimate_available": estimate is not None,
    }


def _references_context(
    session: WritingSession, form: ReferenceForm | None = None, errors: Iterable[str] = (), added: int = 0
) -> dict[str, Any]:
    return {
        "session": session,
        "references": list(session.references.all()),
        "reference_form": form or ReferenceForm(),
        "upload_errors": list(errors),
        "added": added,
        "max_upload_mb": MAX_UPLOAD_BYTES // (1024 * 1024),
        "max_upload_files": MAX_UPLOAD_FILES,
    }


def _flow_check_context(session: WritingSession) -> dict[str, Any]:
    """The flow's role checks on the current team, so the builder says what is missing before Start."""
    from orchestration.flows import get_policy

    agents = list(session.agents.filter(active=True))
    return {"session": session, "flow_problems": get_policy(session.flow).validate(session, agents) if agents else []}


def _page_context(
    request: AuthenticatedHttpRequest, session: WritingSession, settings_form: SessionSettingsForm | None = None
) -> dict[str, Any]:
    return {
        "session": session,
        "project": session.project,
        "settings_form": settings_form or SessionSettingsForm(instance=session, user=request.user),
        "flow_options": flow_options(request.user),
        "preset_form": PresetSaveForm(),
        "balance": credit_balance(request.user),
        **_team_context(request, session),
        **_estimate_context(session),
        **_flow_check_context(session),
        **_references_context(session),
    }


def _saved(response: HttpResponse, session: WritingSession, *, agents_changed: bool = False) -> HttpResponse:
    """A save that changed what a run would cost: refresh the estimate (and the agent pickers)."""
    events = {"builder-changed": True}
    if agents_changed:
        events["agents-changed"] = True
    for name in events:
        trigger_client_event(response, name, after="swap")
    return response


def _status_only(request: AuthenticatedHttpRequest, session: WritingSession, text: str) -> HttpResponse:
    response = render(request, PAGE + "#save_status", {"session": session, "save_message": text, "oob": True})
    return reswap(response, "none")


def _with_status(
    request: AuthenticatedHttpRequest, response: HttpResponse, session: WritingSession, text: str
) -> HttpResponse:
    """Add the save status line (out of band) to a part's response: the server says what happened,
    the page never guesses it from the element the swap replaced."""
    status = render_to_string(
        PAGE + "#save_status", {"session": session, "save_message": text, "oob": True}, request=request
    )
    response.content = response.content + status.encode()
    return response


def _now() -> str:
    return timezone.localtime().strftime("%H:%M:%S")


def _save_agent(form: AgentForm, formset: CriteriaFormSet) -> bool:
    """Write a valid agent card (its form and criteria formset) through the team service; True when
    criterion rows were created or deleted. Raises ServiceError when the session started meanwhile."""
    changes = {name: form.cleaned_data[name] for name in (form._meta.fields or ()) if name in form.cleaned_data}
    deleted_forms = {id(f) for f in formset.deleted_forms}
    deleted = {f.instance.pk for f in formset.deleted_forms if f.instance.pk}
    specs = [
        team.CriterionSpec(
            name=f.cleaned_data["name"],
            weight=f.cleaned_data["weight"],
            description=f.cleaned_data.get("description", ""),
            id=f.instance.pk,
        )
        for f in formset.forms
        if f.has_changed() and id(f) not in deleted_forms and f.cleaned_data
    ]
    return team.update_agent(agent=form.instance, changes=changes, criteria=specs, delete_criteria=deleted)


def form_errors(formset: CriteriaFormSet) -> list[ErrorDict]:
    """`formset.errors`: one ErrorDict per form (django-stubs types it as a list of ErrorList)."""
    return cast("list[ErrorDict]", formset.errors)


def _error_labels(form: BaseForm, formset: CriteriaFormSet | None = None) -> list[str]:
    """The labels of the fields that hold errors, in form order ("Temperature", "Criterion 2 weight")."""
    labels = [str(form[name].label) if name in form.fields else "the form" for name in form.errors]
    if formset is not None:
        for index, errors in enumerate(form_errors(formset)):
            for name in errors:
                field = formset.forms[index].fields.get(name)
                labels.append(f"criterion {index + 1} {str(field.label).lower() if field else name}")
        if formset.non_form_errors():
            labels.append("the criteria")
    return list(dict.fromkeys(labels))


def _not_saved_text(subject: str, labels: list[str]) -> str:
    return f"Not saved: {subject} has errors in {', '.join(labels)}. Fix the highlighted fields."
