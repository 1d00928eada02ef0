"""Conversations (issue 12): start one, list, read with its transcript, rename, delete; send a message
(optionally waiting for the finished reply), stop, regenerate. Every write is
orchestration.conversations.services, as on the chat page; its RateLimited refusals are 429."""

from datetime import datetime
from typing import Any

from ninja import Router, Schema, Status

from api.errors import ApiError
from api.idempotency import idempotent
from api.routes.common import paginate, service_error
from api.routes.projects import owned_project
from api.schemas import ERRORS, Page
from atelier.core.http import AuthenticatedHttpRequest
from orchestration.conversations import services as conversations
from orchestration.conversations.models import Conversation, Message, MessageRole
from orchestration.services import ServiceError

router = Router(tags=["conversations"])

MAX_WAIT_SECONDS = 300


class MessageOut(Schema):
    id: int
    exchange: int
    position: int
    role: str
    status: str
    agent_name: str
    content: str
    data: dict[str, Any]
    turn_id: int | None
    created_at: datetime


class ConversationOut(Schema):
    id: int
    project_id: int
    title: str
    session_id: int  # its hidden run, whose event log carries the reply's live events
    status: str  # the reply's state: draft (no message yet), queued/running (writing), completed, stopped, failed
    max_handoffs: int
    flow: str  # what answers each message: "triage" (handoffs) or "pipeline" (research -> plan -> build -> review)
    last_seq: int
    created_at: datetime
    updated_at: datetime
    last_message_at: datetime | None

    @staticmethod
    def resolve_status(obj: Conversation) -> str:
        return str(obj.session.status)

    @staticmethod
    def resolve_last_seq(obj: Conversation) -> int:
        return int(obj.session.last_seq)


class ConversationDetail(ConversationOut):
    agents: list[dict[str, Any]]
    messages: list[MessageOut]

    @staticmethod
    def resolve_agents(obj: Conversation) -> list[dict[str, Any]]:
        return [
            {"id": a.pk, "name": a.name, "role": a.role, "model": f"{a.model.provider}:{a.model.model_id}"}
            for a in conversations.team(obj)
        ]

    @staticmethod
    def resolve_messages(obj: Conversation) -> list[Message]:
        return conversations.transcript(obj)


class ConversationPage(Page):
    items: list[ConversationOut]


class ConversationIn(Schema):
    project_id: int
    title: str = ""
    preset: str = "writing-desk"


class ConversationPatch(Schema):
    title: str


class MessageIn(Schema):
    text: str


class ExchangeOut(Schema):
    """A sent message and, with ``wait=true``, what answered it (handoffs, tool calls, the reply)."""

    conversation_id: int
    status: str  # the run's state when this response was made
    message: MessageOut
    reply: MessageOut | None  # the final reply, once written
    messages: list[MessageOut]  # everything after the user's message in this exchange


def owned_conversation(request: AuthenticatedHttpRequest, pk: int) -> Conversation:
    try:
        return conversations.get_conversation(user=request.user, pk=pk)
    except Conversation.DoesNotExist:
        raise ApiError(404, "No such conversation.") from None


def _refusal(exc: ServiceError) -> ApiError:
    if isinstance(exc, conversations.RateLimited):
        return ApiError(429, exc.message, code="rate_limited", headers={"Retry-After": "10"}, retry_after=10)
    return service_error(exc)


def _exchange(conversation: Conversation, message: Message) -> dict[str, Any]:
    conversation.session.refresh_from_db(fields=["status", "last_seq"])
    answers = list(
        Message.objects.filter(
            conversation=conversation, exchange=message.exchange, position__gt=message.position, superseded=False
        ).order_by("position")
    )
    final = [m for m in answers if m.role == MessageRole.ASSISTANT and m.data.get("final", True)]
    return {
        "conversation_id": conversation.pk,
        "status": conversation.session.status,
        "message": message,
        "reply": final[-1] if final and not conversation.session.is_active else None,
        "messages": answers,
    }


@router.get("", response={200: ConversationPage, **ERRORS}, summary="List your conversations, most recent first")
def list_conversations(
    request: AuthenticatedHttpRequest, project_id: int | None = None, limit: int = 20, offset: int = 0
) -> dict[str, Any]:
    project = owned_project(request, project_id) if project_id is not None else None
    return paginate(conversations.conversations_for(user=request.user, project=project), limit=limit, offset=offset)


@router.post("", response={201: ConversationDetail, **ERRORS}, summary="Start a conversation (Idempotency-Key)")
@idempotent(ConversationDetail)
def create_conversation(request: AuthenticatedHttpRequest, payload: ConversationIn) -> Status[Conversation]:
    project = owned_project(request, payload.project_id)
    try:
        conversation = conversations.create_conversation(
            project=project, user=request.user, title=payload.title, preset=payload.preset
        )
    except ServiceError as exc:
        raise _refusal(exc) from None
    return Status(201, owned_conversation(request, conversation.pk))


@router.get("/{int:conversation_id}", response={200: ConversationDetail, **ERRORS}, summary="Read with transcript")
def get_conversation(request: AuthenticatedHttpRequest, conversation_id: int) -> Conversation:
    return owned_conversation(request, conversation_id)


@router.patch("/{int:conversation_id}", response={200: ConversationDetail, **ERRORS}, summary="Rename")
def rename_conversation(
    request: AuthenticatedHttpRequest, conversation_id: int, payload: ConversationPatch
) -> Conversation:
    conversation = owned_conversation(request, conversation_id)
    try:
        conversations.rename_conversation(conversation=conversation, user=request.user, title=payload.title)
    except ServiceError as exc:
        raise ApiError(422, exc.message, errors=[{"field": "title", "message": exc.message}]) from None
    return owned_conversation(request, conversation_id)


@router.delete("/{int:conversation_id}", response={204: None, **ERRORS}, summary="Delete with its messages")
def delete_conversation(request: AuthenticatedHttpRequest, conversation_id: int) -> Status[None]:
    conversation = owned_conversation(request, conversation_id)
    conversations.delete_conversation(conversation=conversation, user=request.user)
    return Status(204, None)


class MessagePage(Page):
    items: list[MessageOut]


@router.get("/{int:conversation_id}/messages", response={200: MessagePage, **ERRORS}, summary="The transcript")
def list_messages(
    request: AuthenticatedHttpRequest, conversation_id: int, limit: int = 100, offset: int = 0
) -> dict[str, Any]:
    conversation = owned_conversation(request, conversation_id)
    messages = conversation.messages.filter(superseded=False).order_by("position")
    return paginate(messages, limit=limit, offset=offset)


@router.post(
    "/{int:conversation_id}/messages",
    response={201: ExchangeOut, 200: ExchangeOut, 202: ExchangeOut, **ERRORS},
    summary="Send a message; wait=true returns the finished reply (Idempotency-Key)",
)
@idempotent(ExchangeOut)
def send_message(
    request: AuthenticatedHttpRequest, conversation_id: int, payload: MessageIn, wait: bool = False, timeout: int = 120
) -> Status[dict[str, Any]]:
    """Saves the message and starts the reply (201, follow it on the event stream or poll). With
    ``wait=true`` the request blocks until the reply is finished (200 with ``reply``), at most
    ``timeout`` seconds (1-300); if it is still being written then, 202 with what exists so far.
    429 for the plan's messages per minute or replies at once."""
    if not 1 <= timeout <= MAX_WAIT_SECONDS:
        raise ApiError(422, "Invalid timeout.", errors=[{"field": "timeout", "message": f"1 to {MAX_WAIT_SECONDS}."}])
    conversation = owned_conversation(request, conversation_id)
    if not payload.text.strip() or len(payload.text) > conversations.MAX_MESSAGE_CHARS:
        problem = f"Write a message of 1 to {conversations.MAX_MESSAGE_CHARS:,} characters."
        raise ApiError(422, "The request has invalid fields.", errors=[{"field": "text", "message": problem}])
    try:
        message = conversations.send_message(conversation=conversation, user=request.user, text=payload.text)
    except ServiceError as exc:
        raise _refusal(exc) from None
    if not wait:
        return Status(201, _exchange(conversation, message))
    from orchestration.streams import SessionEvents, wait_for_run_end_sync

    try:
        wait_for_run_end_sync(SessionEvents(conversation.session_id), timeout=timeout)
    except TimeoutError:
        return Status(202, _exchange(conversation, message))
    return Status(200, _exchange(conversation, message))


@router.post("/{int:conversation_id}/stop", response={200: ConversationDetail, **ERRORS}, summary="Stop the reply")
def stop_reply(request: AuthenticatedHttpRequest, conversation_id: int) -> Conversation:
    conversation = owned_conversation(request, conversation_id)
    if not conversations.stop_reply(conversation=conversation, user=request.user):
        raise ApiError(409, "No reply is being written.", code="conflict")
    return owned_conversation(request, conversation_id)


@router.post(
    "/{int:conversation_id}/regenerate", response={201: ExchangeOut, **ERRORS}, summary="Answer the last message again"
)
def regenerate_reply(request: AuthenticatedHttpRequest, conversation_id: int) -> Status[dict[str, Any]]:
    conversation = owned_conversation(request, conversation_id)
    try:
        message = conversations.regenerate_reply(conversation=conversation, user=request.user)
    except ServiceError as exc:
        raise _refusal(exc) from None
    return Status(201, _exchange(conversation, message))
