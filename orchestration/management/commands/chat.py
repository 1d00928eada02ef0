"""Talk to a conversation's team from the command line: send messages, watch each reply stream in."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from orchestration.conversations import runner
from orchestration.conversations import services as conversations
from orchestration.conversations.models import Conversation, Message, MessageRole
from orchestration.management.commands.run_session import Driver
from orchestration.management.terminal import EventFollower, TerminalPrinter
from orchestration.models import FINISHED_STATUSES, Project, SessionEvent, Status, WritingSession
from orchestration.services import ServiceError, create_project

if TYPE_CHECKING:
    from django.contrib.auth.models import User

DEFAULT_PROJECT = "Command line"
RESULT_CHARS = 300  # a tool result is printed up to this many characters


class ChatPrinter(TerminalPrinter):
    """Prints a reply's events: its text as it streams, under the label of the agent writing it (the
    label changes when triage hands the conversation to a specialist), handoffs and tool calls as lines."""

    def __init__(self, command: BaseCommand, *, stream: bool) -> None:
        super().__init__(command, stream=stream)
        self.labels: dict[int | None, str] = {}  # by turn id

    def handle(self, event: SessionEvent) -> None:
        payload = event.payload or {}
        if event.kind == "turn_started":
            self.labels[event.turn_id] = f"[{payload.get('agent_name') or 'Agent'}]"
        elif event.kind == "chunk" and self.stream:
            self.stream_text(event.turn_id, payload.get("text", ""), self.labels.get(event.turn_id, "[Agent]"))
        elif event.kind == "message":
            message_id = payload.get("message_id")
            self.message(Message.objects.filter(pk=message_id).first() if message_id is not None else None)
        elif event.kind == "turn_finished" and payload.get("error"):
            self.line(f"{self.labels.get(event.turn_id, '[Agent]')} {payload.get('status')}: {payload['error']}")

    def message(self, message: Message | None) -> None:
        if message is None:
            return
        data = message.data or {}
        if message.role == MessageRole.HANDOFF:
            verb = "handed back to" if data.get("back") else "handed to"
            reason = f": {data['reason']}" if data.get("reason") else ""
            capped = " (handoff limit reached: answering directly)" if data.get("capped") else ""
            self.line(f"→ {data.get('from_name') or message.agent_name} {verb} {data.get('to_name')}{reason}{capped}")
        elif message.role == MessageRole.TOOL and data.get("result"):
            result = " ".join(str(data["result"]).split())
            result = result if len(result) <= RESULT_CHARS else result[:RESULT_CHARS] + "…"
            self.line(f"[{message.agent_name}] tool {data.get('name')} → {result}")
        elif message.role == MessageRole.ASSISTANT and not self.stream and message.content:
            self.line(f"[{message.agent_name}] {message.content}")


class Command(BaseCommand):
    help = (
        "Chat with a conversation's team (triage and specialists) from the command line: each message "
        "starts one reply, run in this process (no worker needed), streamed under the label of the "
        "agent writing it; handoffs (→ Triage handed to Research specialist: reason) and tool calls "
        "are printed as they happen. Rules: the user is found by email; --conversation ID continues one "
        "of the user's conversations, otherwise a new one is created in --project (reused by name, "
        f"default {DEFAULT_PROJECT!r}) from --preset (default writing-desk). The message is the "
        "positional text; without it, each line of standard input is sent as a message in turn (blank "
        "lines are skipped). The same plan limits, credits and message rate limits as the chat page "
        "apply; a refusal is printed and the exit status is 1. Ctrl-C stops the reply in flight (what "
        "was written is kept). Ends with a summary line: messages sent, credits used and left."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("message", nargs="*", help="The message (default: read lines from standard input).")
        parser.add_argument("--user", required=True, metavar="EMAIL", help="The owner's email address.")
        parser.add_argument("--conversation", type=int, metavar="ID", help="Continue this conversation.")
        parser.add_argument("--project", default=DEFAULT_PROJECT, metavar="NAME", help="Project for a new one.")
        parser.add_argument("--title", default="", metavar="T", help="Title of a new conversation.")
        parser.add_argument("--preset", default="writing-desk", metavar="SLUG", help="Team of a new conversation.")
        parser.add_argument("--no-stream", action="store_true", help="Print each reply when done, not every token.")

    def handle(self, *args: Any, message: list[str], **options: Any) -> None:
        user = self._user(options["user"])
        conversation = self._conversation(user, options)
        self.stdout.write(f"Conversation {conversation.pk} {conversation.title!r} ({conversation.project.name}).")
        texts = [" ".join(message)] if message else (line.strip() for line in sys.stdin)
        sent = 0
        credits_before = WritingSession.objects.get(pk=conversation.session_id).credits_used
        for text in texts:
            if not text:
                continue
            self.stdout.write(f"> {text}")
            self._exchange(conversation, user, text, stream=not options["no_stream"])
            sent += 1
        from billing.services import get_balance

        used = WritingSession.objects.get(pk=conversation.session_id).credits_used - credits_before
        self.stdout.write(
            self.style.SUCCESS(
                f"Conversation {conversation.pk}: {sent} message(s) answered, {used:,} credit(s) used "
                f"({get_balance(user):,} left)."
            )
        )

    def _exchange(self, conversation: Conversation, user: User, text: str, *, stream: bool) -> None:
        """Send one message and print its reply until the run behind the conversation ends."""
        follower = EventFollower(
            conversation.session_id, after=WritingSession.objects.get(pk=conversation.session_id).last_seq
        )
        try:
            conversations.send_message(conversation=conversation, user=user, text=text)
        except ServiceError as exc:
            raise CommandError(f"Not sent: {exc.message}") from None
        printer = ChatPrinter(self, stream=stream)
        driver = Driver(conversation.session_id, drive=runner.drive)
        driver.start()
        try:
            follower.follow(driver, printer)
        except KeyboardInterrupt:
            printer.end_line()
            self.stderr.write("Stopping the reply…")
            conversations.stop_reply(conversation=conversation, user=user)
            follower.follow(driver, printer)
            raise CommandError("Stopped with Ctrl-C.", returncode=130) from None
        printer.end_line()
        if driver.error is not None:
            raise CommandError(f"The reply failed: {driver.error!r}.")
        session = WritingSession.objects.get(pk=conversation.session_id)
        if session.status not in FINISHED_STATUSES or session.status == Status.FAILED:
            reason = session.stop_detail or session.get_status_display()
            raise CommandError(f"The reply did not finish: {reason}")

    def _user(self, email: str) -> User:
        users = list(get_user_model().objects.filter(email__iexact=email.strip())[:2])
        if len(users) != 1:
            raise CommandError(f"No user with email {email!r}." if not users else f"More than one user has {email!r}.")
        return users[0]

    def _conversation(self, user: User, options: dict[str, Any]) -> Conversation:
        if options["conversation"] is not None:
            try:
                return conversations.get_conversation(user=user, pk=options["conversation"])
            except Conversation.DoesNotExist:
                raise CommandError(f"No conversation {options['conversation']} for {user.email}.") from None
        name = options["project"].strip()
        if not name:
            raise CommandError("--project must not be empty.")
        project = Project.objects.filter(owner=user, name=name, archived_at__isnull=True).order_by("pk").first()
        try:
            if project is None:
                project = create_project(owner=user, name=name)
            return conversations.create_conversation(
                project=project, user=user, title=options["title"], preset=options["preset"]
            )
        except ServiceError as exc:
            raise CommandError(exc.message) from None
