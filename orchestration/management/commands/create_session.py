"""Create a draft writing session from a team preset and a Markdown brief, from the command line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import Q
from django.urls import reverse

from orchestration import presets, services, team
from orchestration.catalogue import validate_model_for_use
from orchestration.models import LLMModel, Project, TeamPreset, WritingSession
from orchestration.uploads import MAX_REFERENCE_CHARS, MAX_UPLOAD_FILES

if TYPE_CHECKING:
    from django.contrib.auth.models import User

DEFAULT_PROJECT = "Command line"
# The brief's own limit (the builder form enforces the same), never above the engine's document limit.
MAX_BRIEF_CHARS = min(WritingSession._meta.get_field("brief").max_length or services.MAX_DOCUMENT_CHARS,
                      services.MAX_DOCUMENT_CHARS)  # fmt: skip
MAX_TITLE_CHARS = 200


class _DryRun(Exception):
    """Raised inside the transaction to roll back everything a dry run created."""


def read_text_file(path: str, *, what: str, max_chars: int) -> str:
    """The file's text, or a CommandError that says what is wrong with it (never a traceback)."""
    file = Path(path).expanduser()
    if not file.exists():
        raise CommandError(f"{what} file {path!r} does not exist.")
    if not file.is_file():
        raise CommandError(f"{what} file {path!r} is not a regular file.")
    # UTF-8 uses at most 4 bytes a character: anything bigger cannot fit, and is not read into memory.
    size = file.stat().st_size
    if size > max_chars * 4:
        raise CommandError(
            f"{what} file {path!r} is too large ({size:,} bytes; the limit is {max_chars:,} characters)."
        )
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise CommandError(f"Cannot read {what.lower()} file {path!r}: {exc.strerror or exc}.") from None
    if b"\x00" in raw:
        raise CommandError(f"{what} file {path!r} looks like a binary file, not text.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CommandError(
            f"{what} file {path!r} is not UTF-8 text (invalid byte at position {exc.start}); save it as UTF-8."
        ) from None
    text = text.replace("\r\n", "\n")
    if len(text) > max_chars:
        raise CommandError(f"{what} file {path!r} is too long ({len(text):,} characters; the limit is {max_chars:,}).")
    return text


def title_from_brief(brief: str, fallback: str) -> str:
    """The brief's first Markdown heading, else the file name: what a person would call it."""
    match = re.search(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", brief, flags=re.MULTILINE)
    title = match.group(1).strip() if match else fallback
    return (title or "Untitled session")[:MAX_TITLE_CHARS]


class Command(BaseCommand):
    help = (
        "Create a draft writing session for a user from a team preset and a Markdown brief file, "
        "and print its id and URL. Rules: the user is found by email; the preset by slug or name "
        "among the shipped presets and the user's own (the user's own wins on a tie); the project is "
        f"reused by name for that user (not archived) or created (default {DEFAULT_PROJECT!r}). "
        "Files must exist and be UTF-8 text: the brief at most "
        f"{MAX_BRIEF_CHARS:,} characters, the starting document at most {services.MAX_DOCUMENT_CHARS:,}, "
        f"each reference at most {MAX_REFERENCE_CHARS:,} (at most {MAX_UPLOAD_FILES} references). "
        "The title defaults to the brief's first heading, else the brief's file name. --model "
        "replaces every agent's model (and drops fallback models); without it, shipped presets use "
        "the user's default model as in the web builder. The session stays a draft: start it with "
        "`manage.py run_session ID` or in the browser; problems that would stop it from starting "
        "(missing keys, plan limits) are printed as warnings. --dry-run checks everything and saves nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, metavar="EMAIL", help="The owner's email address.")
        parser.add_argument("--preset", required=True, metavar="SLUG_OR_NAME", help="Team preset slug or name.")
        parser.add_argument("--brief-file", required=True, metavar="FILE", help="Markdown file with the brief.")
        parser.add_argument("--project", default=DEFAULT_PROJECT, metavar="NAME", help="Project name (reused).")
        parser.add_argument("--title", metavar="T", help="Session title (default: the brief's first heading).")
        parser.add_argument("--document", metavar="FILE", help="A starting document (Markdown) to refine.")
        parser.add_argument(
            "--reference", action="append", default=[], metavar="FILE", help="A reference file; repeatable."
        )
        parser.add_argument("--rounds", type=int, metavar="N", help="Maximum rounds (overrides the preset).")
        parser.add_argument(
            "--model",
            metavar="PROVIDER:MODEL_ID",
            help="Use this catalogue model for every agent, e.g. demo:demo-writer.",
        )
        parser.add_argument("--dry-run", action="store_true", help="Check everything; save nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        user = self._user(options["user"])
        preset = self._preset(user, options["preset"])
        model = self._model(options["model"])
        rounds = options["rounds"]
        if rounds is not None and not 1 <= rounds <= services.MAX_ROUNDS_LIMIT:
            raise CommandError(f"--rounds must be between 1 and {services.MAX_ROUNDS_LIMIT} (got {rounds}).")
        project_name = options["project"].strip()
        if not project_name:
            raise CommandError("--project must not be empty.")
        name_limit = Project._meta.get_field("name").max_length
        if name_limit is not None and len(project_name) > name_limit:
            raise CommandError(f"--project is too long (at most {name_limit}).")

        brief_path = options["brief_file"]
        brief = read_text_file(brief_path, what="Brief", max_chars=MAX_BRIEF_CHARS).strip()
        if not brief:
            raise CommandError(f"Brief file {brief_path!r} is empty: the team needs to know what to write.")
        document = ""
        if options["document"]:
            document = read_text_file(options["document"], what="Document", max_chars=services.MAX_DOCUMENT_CHARS)
        if len(options["reference"]) > MAX_UPLOAD_FILES:
            raise CommandError(f"At most {MAX_UPLOAD_FILES} references per session (got {len(options['reference'])}).")
        references = []
        for path in options["reference"]:
            content = read_text_file(path, what="Reference", max_chars=MAX_REFERENCE_CHARS).strip()
            if not content:
                raise CommandError(f"Reference file {path!r} contains no text.")
            references.append((Path(path).stem[:200] or Path(path).name, content, Path(path).name[:255]))
        title = (options["title"] or "").strip()[:MAX_TITLE_CHARS] or title_from_brief(brief, Path(brief_path).stem)

        dry_run = options["dry_run"]
        try:
            with transaction.atomic():
                project, project_created = self._project(user, project_name)
                # The same services, plan gates, caps and quotas as the web builder.
                try:
                    session = team.create_session(
                        user=user,
                        project=project,
                        title=title,
                        brief=brief,
                        document=document,
                        preset=preset,
                        model=model,
                        every_agent=True,
                        max_rounds=rounds,
                    )
                    services.add_references(session=session, user=user, items=references)
                except services.ServiceError as exc:
                    raise CommandError(exc.message) from None
                session.refresh_from_db()
                self._report(session, project, project_created, dry_run=dry_run)
                if dry_run:
                    raise _DryRun
        except _DryRun:
            self.stdout.write("Dry run: nothing was saved.")

    # --- lookups ---------------------------------------------------------------------------------

    def _user(self, email: str) -> User:
        users = list(get_user_model().objects.filter(email__iexact=email.strip())[:2])
        if not users:
            raise CommandError(f"No user with email {email!r}.")
        if len(users) > 1:
            raise CommandError(f"More than one user has email {email!r}; fix the accounts in the admin first.")
        return users[0]

    def _preset(self, user: User, value: str) -> TeamPreset:
        value = value.strip()
        matches = list(presets.presets_for(user).filter(Q(slug=value) | Q(name__iexact=value)))
        if not matches:
            available = ", ".join(f"{p.slug} ({p.name})" for p in presets.presets_for(user)) or "none"
            raise CommandError(f"No team preset {value!r} for this user. Available: {available}.")
        own = [p for p in matches if p.owner_id == user.pk]
        return (own or matches)[0]

    def _model(self, ref: str | None) -> LLMModel | None:
        if not ref:
            return None
        if ":" not in ref:
            raise CommandError(f"--model must look like provider:model_id (for example demo:demo-writer), got {ref!r}.")
        provider, model_id = ref.split(":", 1)
        model = LLMModel.objects.filter(provider=provider, model_id=model_id).first()
        if model is None:
            raise CommandError(f"--model {ref!r} is not in the model catalogue (see `manage.py check_providers`).")
        if error := validate_model_for_use(model):
            raise CommandError(f"--model {ref!r}: {error}")
        return model

    def _project(self, user: User, name: str) -> tuple[Project, bool]:
        project = Project.objects.filter(owner=user, name=name, archived_at__isnull=True).order_by("pk").first()
        if project is not None:
            return project, False
        from orchestration.services import ServiceError, create_project

        try:
            return create_project(owner=user, name=name), True
        except ServiceError as exc:
            raise CommandError(exc.message) from exc

    # --- output ----------------------------------------------------------------------------------

    def _report(self, session: WritingSession, project: Project, project_created: bool, *, dry_run: bool) -> None:
        from billing.gating import check

        verb = "Would create" if dry_run else "Created"
        self.stdout.write(
            f"{verb} project {project.name!r}." if project_created else f"Using project {project.name!r}."
        )
        agents = list(session.agents.select_related("model").order_by("order", "pk"))
        for agent in agents:
            self.stdout.write(f"  Agent {agent.order + 1}: {agent.name} ({agent.role}) on {agent.model.display_name}")
        refs = session.references.count()
        # A draft may be incomplete; say now what would stop it from starting, so nobody is surprised later.
        problems = services.validate_for_start(session)
        gate = check(session.project.owner, "start_session", session=session)
        if not gate.allowed:
            problems.append(gate.reason)
        for problem in problems:
            self.stderr.write(self.style.WARNING(f"Warning: {problem}"))
        if dry_run:
            self.stdout.write(
                f"{verb} draft session {session.title!r}: {len(agents)} agent(s), {session.max_rounds} round(s), "
                f"{refs} reference(s)."
            )
            return
        url = settings.SITE_URL + reverse("session_edit", args=[session.pk])
        self.stdout.write(f"Session id: {session.pk}")
        self.stdout.write(f"URL: {url}")
        ready = "ready to start" if not problems else f"not ready to start ({len(problems)} problem(s) above)"
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} draft session {session.pk} {session.title!r}: {len(agents)} agent(s), "
                f"{session.max_rounds} round(s), {refs} reference(s); {ready}."
            )
        )
