"""Who am I: the caller, their plan and its API limits."""

from ninja import Router, Schema

from api.schemas import ERRORS
from atelier.core.http import AuthenticatedHttpRequest

router = Router(tags=["account"])


class MeOut(Schema):
    id: int
    email: str
    plan: str
    api_requests_per_minute: int
    api_concurrent_streams: int
    api_key: str | None  # the prefix of the key in use; None for the browser session


@router.get("/me", response={200: MeOut, **ERRORS}, summary="The authenticated user and their API limits")
def me(request: AuthenticatedHttpRequest) -> dict[str, object]:
    from billing.services import effective_plan, get_account

    plan = effective_plan(get_account(request.user))
    key = getattr(request, "api_key", None)
    return {
        "id": request.user.pk,
        "email": request.user.email,
        "plan": plan.key,
        "api_requests_per_minute": plan.api_requests_per_minute,
        "api_concurrent_streams": plan.api_concurrent_streams,
        "api_key": key.prefix if key else None,
    }
