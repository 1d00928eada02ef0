"""Team presets: the shipped ones as data, seeding, applying a preset to a session, and copying teams.

Preset data format (TeamPreset.data):
    {"agents": [{"name", "role", "model": "provider:model_id", "role_prompt", "temperature",
                 "max_output_tokens", "fallback_model": "provider:model_id" | None,
                 "thinking_budget_tokens": 0, "reasoning_effort": "" (both optional),
                 "criteria": [{"name", "description", "weight"}]}],
     "max_rounds": 4, "score_threshold": 8.5, "threshold_agent": <index into agents> | None,
     "convergence_percent": None, "credit_budget": None}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils.text import slugify

from orchestration.models import (
    Agent,
    Criterion,
    Flow,
    LLMModel,
    ReferenceDocument,
    Status,
    TeamPreset,
    WritingSession,
)
from orchestration.provider_table import DEMO as DEMO_PROVIDER
from orchestration.retrieval import index_references

if TYPE_CHECKING:
    from django.apps.registry import Apps
    from django.contrib.auth.models import User
    from django.db.backends.base.schema import BaseDatabaseSchemaEditor
    from django.db.models import QuerySet

DEMO_MODEL_REF = "demo:demo-writer"

ACADEMIC_WRITER_PROMPT = """You are an academic writer.
Turn the brief into a rigorous, readable piece of scholarly prose.
- State a clear thesis early and make every section serve it.
- Support claims with evidence from the reference documents; say plainly when a claim is your inference.
- Define terms before you rely on them, and prefer precise words over impressive ones.
- When the editor has left feedback, address each point explicitly in your revision rather than starting over.
Return the complete revised document in Markdown."""

CRITICAL_EDITOR_PROMPT = """You are a critical editor for academic writing.
Your job is to make the argument stronger, not to be polite.
- Find the weakest claim, the missing evidence, the unclear paragraph and the structural detour.
- Improve the document directly where a fix is obvious; for larger problems, rewrite the passage.
- Check every citation-like statement against the reference documents and flag what is unsupported.
- Keep the author's voice and thesis unless they cannot be defended.
Return the complete edited document in Markdown, then score it against your criteria."""

SHIPPED_PRESETS: list[dict[str, Any]] = [
    {
        "slug": "academic-writer-critical-editor",
        "name": "Academic writer + critical editor",
        "description": (
            "A writer drafts a rigorous piece; a critical editor tightens the argument and scores it each round."
        ),
        "flow": Flow.SEQUENTIAL,
        "data": {
            "agents": [
                {
                    "name": "Academic writer",
                    "role": "writer",
                    "model": DEMO_MODEL_REF,
                    "role_prompt": ACADEMIC_WRITER_PROMPT,
                    "temperature": 0.7,
                    "max_output_tokens": 2048,
                    "fallback_model": None,
                    "criteria": [
                        {"name": "Clarity", "description": "Plain, precise sentences; terms defined.", "weight": 1.0},
                        {"name": "Argument strength", "description": "A clear thesis, defended.", "weight": 1.5},
                        {"name": "Structure", "description": "Sections build on each other.", "weight": 1.0},
                    ],
                },
                {
                    "name": "Critical editor",
                    "role": "editor",
                    "model": DEMO_MODEL_REF,
                    "role_prompt": CRITICAL_EDITOR_PROMPT,
                    "temperature": 0.3,
                    "max_output_tokens": 2048,
                    "fallback_model": None,
                    "criteria": [
                        {"name": "Clarity", "description": "Would a smart non-specialist follow it?", "weight": 1.0},
                        {"name": "Argument strength", "description": "Counter-arguments are addressed.", "weight": 2.0},
                        {"name": "Evidence", "description": "Claims are supported by the references.", "weight": 1.5},
                        {"name": "Structure", "description": "Logical order, no detours.", "weight": 1.0},
                    ],
                },
            ],
            "max_rounds": 4,
            "score_threshold": 8.5,
            "threshold_agent": 1,
            "convergence_percent": None,
            "credit_budget": None,
        },
    },
]


def _agent(
    name: str, role: str, prompt: str, criteria: list[tuple[str, str, float]], temperature: float = 0.5
) -> dict[str, Any]:
    return {
        "name": name,
        "role": role,
        "model": DEMO_MODEL_REF,
        "role_prompt": prompt,
        "temperature": temperature,
        "max_output_tokens": 2048,
        "fallback_model": None,
        "criteria": [{"name": n, "description": d, "weight": w} for n, d, w in criteria],
    }


_WRITING_CRITERIA = [
    ("Clarity", "Plain, precise sentences; terms defined.", 1.0),
    ("Structure", "Sections build on each other.", 1.0),
    ("Argument strength", "A clear thesis, defended.", 1.5),
]

SHIPPED_PRESETS += [
    {
        "slug": "writer-two-editors-synthesizer",
        "name": "Writer, two editors and a synthesizer",
        "description": (
            "A writer drafts; a structural editor and a line editor review the same draft in parallel; "
            "a synthesizer merges their edits and says which it took."
        ),
        "flow": Flow.EDITORIAL,
        "data": {
            "agents": [
                _agent(
                    "Writer",
                    "writer",
                    "You are the writer. Draft the piece the brief asks for; in later rounds, revise the latest "
                    "version with the synthesizer's notes in mind. Write for the stated audience.",
                    _WRITING_CRITERIA,
                    0.7,
                ),
                _agent(
                    "Structural editor",
                    "editor",
                    "You are a structural editor. Look at the shape of the piece: the order of sections, missing "
                    "steps in the argument, detours, the opening and the ending. Suggest moves, cuts and additions.",
                    [
                        ("Structure", "Logical order, no detours.", 2.0),
                        ("Argument strength", "Each step follows.", 1.0),
                    ],
                    0.3,
                ),
                _agent(
                    "Line editor",
                    "editor",
                    "You are a line editor. Work sentence by sentence: wordiness, vague words, jargon, rhythm, "
                    "grammar. Quote the exact sentence and give the rewrite.",
                    [
                        ("Clarity", "Every sentence says one thing plainly.", 2.0),
                        ("Style", "Varied, concrete, no filler.", 1.0),
                    ],
                    0.3,
                ),
                _agent(
                    "Synthesizer",
                    "synthesizer",
                    "You are the synthesizer. Merge the editors' edits into one coherent next version. Where they "
                    "conflict, choose the one that serves the brief, and say why.",
                    _WRITING_CRITERIA,
                    0.4,
                ),
            ],
            "max_rounds": 3,
            "score_threshold": 8.5,
            "threshold_agent": 3,
            "convergence_percent": None,
            "credit_budget": None,
        },
    },
    {
        "slug": "product-roundtable",
        "name": "Product roundtable",
        "description": (
            "Product, engineering and risk critics review a spec in parallel and raise issues by severity; "
            "a moderator resolves them until no high-severity issue is left."
        ),
        "flow": Flow.ROUNDTABLE,
        "data": {
            "agents": [
                _agent(
                    "Product critic",
                    "critic",
                    "You are a product manager. Judge the document on user value: who the user is, the problem, "
                    "the success measure, scope creep, what is missing for launch.",
                    [("User value", "Clear user, problem and outcome.", 2.0), ("Scope", "Focused and shippable.", 1.0)],
                    0.3,
                ),
                _agent(
                    "Engineering critic",
                    "critic",
                    "You are a senior engineer. Judge feasibility: unstated technical assumptions, dependencies, "
                    "effort, failure modes, data and performance.",
                    [
                        ("Feasibility", "Buildable as written.", 2.0),
                        ("Completeness", "Edge cases and failure modes.", 1.0),
                    ],
                    0.3,
                ),
                _agent(
                    "Risk critic",
                    "critic",
                    "You are a risk and compliance reviewer. Look for security, privacy, legal, financial and "
                    "reputational risks, and for claims that cannot be backed.",
                    [
                        ("Risk coverage", "Risks named with mitigations.", 2.0),
                        ("Accuracy", "No unsupported claims.", 1.0),
                    ],
                    0.2,
                ),
                _agent(
                    "Moderator",
                    "moderator",
                    "You are the moderator. Revise the document to resolve the critics' issues, high severity first. "
                    "Keep what works; decline an issue only with a reason.",
                    [("Overall quality", "Ready for a decision.", 1.0)],
                    0.4,
                ),
            ],
            "max_rounds": 4,
            "score_threshold": None,
            "threshold_agent": None,
            "convergence_percent": None,
            "credit_budget": None,
            "flow_config": {"stop_when_no_high_issues": True, "stop_below_change_percent": 5.0},
        },
    },
    {
        "slug": "writing-roundtable",
        "name": "Writing roundtable",
        "description": (
            "Argument, evidence and style critics review an essay in parallel; a moderator revises it "
            "until it converges."
        ),
        "flow": Flow.ROUNDTABLE,
        "data": {
            "agents": [
                _agent(
                    "Argument critic",
                    "critic",
                    "You judge the argument: is the thesis clear, does each step follow, are counter-arguments met?",
                    [("Argument strength", "Thesis clear and defended.", 2.0)],
                    0.3,
                ),
                _agent(
                    "Evidence critic",
                    "critic",
                    "You judge the evidence: is every claim supported, are sources and numbers used correctly?",
                    [("Evidence", "Claims are supported.", 2.0)],
                    0.3,
                ),
                _agent(
                    "Style critic",
                    "critic",
                    "You judge the prose: clarity, concision, tone for the audience, rhythm.",
                    [("Clarity", "Plain and precise.", 1.0), ("Style", "Readable and concrete.", 1.0)],
                    0.3,
                ),
                _agent(
                    "Moderator",
                    "moderator",
                    "You are the moderator. Revise the essay to resolve the critics' issues, high severity first, "
                    "keeping the author's voice.",
                    _WRITING_CRITERIA,
                    0.5,
                ),
            ],
            "max_rounds": 4,
            "score_threshold": None,
            "threshold_agent": None,
            "convergence_percent": None,
            "credit_budget": None,
            "flow_config": {"stop_when_no_high_issues": True, "stop_below_change_percent": 5.0},
        },
    },
]

SHIPPED_PRESETS += [
    {
        "slug": "researched-article",
        "name": "Researched article",
        "description": (
            "A researcher summarises the passages found in your references, with citations; a planner outlines; "
            "a builder writes the article to your tone, length and format; a reviewer scores it and proposes "
            "edits that Atelier applies where the text matches. Builds again when the review scores under 8."
        ),
        "flow": Flow.PIPELINE,
        "data": {
            "agents": [
                _agent(
                    "Researcher",
                    "researcher",
                    "You are a careful researcher. Report only what the source passages say, cite every point, "
                    "and say plainly what they do not cover.",
                    [("Coverage", "The findings cover what the brief needs, each with a source.", 1.0)],
                    0.2,
                ),
                _agent(
                    "Planner",
                    "planner",
                    "You plan articles: a clear line of argument, one job per section, sources assigned.",
                    [("Structure", "Every section has one clear goal; together they answer the brief.", 1.0)],
                    0.4,
                ),
                _agent(
                    "Builder",
                    "builder",
                    "You write clear, well-sourced articles that follow the outline and the owner's settings.",
                    [("Fidelity", "Follows the outline, the sources and the tone, length and format set.", 1.0)],
                    0.6,
                ),
                _agent(
                    "Reviewer",
                    "reviewer",
                    "You are an exacting reviewer: every claim needs a source, every sentence must earn its place.",
                    [
                        ("Evidence", "Claims are supported by the cited sources.", 1.5),
                        ("Clarity", "Plain, precise sentences; no filler.", 1.0),
                        ("Structure", "Follows the outline; sections build on each other.", 1.0),
                    ],
                    0.2,
                ),
            ],
            "max_rounds": 2,
            "score_threshold": None,
            "threshold_agent": None,
            "convergence_percent": None,
            "credit_budget": None,
            "flow_config": {
                "passages": 8,
                "tone": "neutral",
                "length_words": 800,
                "format": "article",
                "revise_below": 8.0,
            },
        },
    },
]

SHIPPED_PRESETS += [
    {
        "slug": "planned-report",
        "name": "Planned report",
        "description": (
            "A planner splits the brief into a task graph; workers write the parts in parallel, each checked by "
            "a verifier (repaired or re-run on the next-best model when it falls short); an assembler merges them."
        ),
        "flow": Flow.PLANNED,
        "data": {
            "agents": [
                _agent(
                    "Planner",
                    "planner",
                    "You plan reports: research first, then sections that can be written independently, then a "
                    "conclusion that depends on them. Precise instructions and checkable expected outputs.",
                    [("Coverage", "The tasks cover the whole brief.", 1.0)],
                    0.2,
                ),
                _agent(
                    "Worker",
                    "worker",
                    "You write one part of a report at a time: exactly what the task asks, grounded in the results "
                    "you are given, in plain and precise prose.",
                    [("Task fit", "Meets the task's expected output.", 2.0), ("Clarity", "Plain and precise.", 1.0)],
                    0.5,
                ),
                _agent(
                    "Verifier",
                    "verifier",
                    "You check each part against its task strictly but fairly: missing content, wrong scope or an "
                    "unfinished output fail; matters of taste do not.",
                    [("Rigour", "Real gaps found, no false alarms.", 1.0)],
                    0.0,
                ),
                _agent(
                    "Assembler",
                    "assembler",
                    "You merge the parts into one report in plan order, smoothing transitions and removing "
                    "repetition without adding new claims.",
                    _WRITING_CRITERIA,
                    0.3,
                ),
            ],
            "max_rounds": 1,
            "score_threshold": None,
            "threshold_agent": None,
            "convergence_percent": None,
            "credit_budget": None,
            "flow_config": {"approve_plan": False, "max_repairs": 1, "min_words": 20},
        },
    },
]

DEMO_BRIEF = (
    "Write a short essay (about 600 words) arguing whether cities should replace car lanes with "
    "protected bike lanes. Use clear sections and end with a recommendation."
)


# The demo's reference document: sample material, labelled as such, so the demo can show quoting.
DEMO_REFERENCE_TITLE = "Street notes (sample material for the demo)"
DEMO_REFERENCE = (
    "These notes are sample material written for Atelier's demo; they are not a real study.\n\n"
    "On the sample high street, cyclist injuries fell by a third in the two years after protected bike lanes "
    "replaced one car lane in each direction. Shop owners had feared losing passing trade; takings were flat "
    "in the first year and rose slightly in the second. Delivery drivers reported longer loading times "
    "until two loading bays were added on side streets."
)
# What the "Try the demo team" run uses, stated on the dashboard. The demo model costs the provider nothing,
# but its calls cost credits like any model (billing.pricing: 1 credit per started 1,000 tokens), so every
# credit path runs offline. tests/orchestration/test_demo_path.py runs the demo and checks the ledger stays in range.
DEMO_RUN_CREDITS = (15, 25)


def seed_presets(apps: Apps | None = None, schema_editor: BaseDatabaseSchemaEditor | None = None) -> int:
    """Create or update the shipped presets (owner=None). Idempotent; usable from a data migration."""
    preset_model = apps.get_model("orchestration", "TeamPreset") if apps is not None else TeamPreset
    for spec in SHIPPED_PRESETS:
        preset_model.objects.update_or_create(
            owner=None,
            slug=spec["slug"],
            defaults={
                "name": spec["name"],
                "description": spec["description"],
                "flow": str(spec["flow"]),
                "data": spec["data"],
            },
        )
    return len(SHIPPED_PRESETS)


def model_ref(model: LLMModel | None) -> str | None:
    return f"{model.provider}:{model.model_id}" if model else None


def resolve_model_ref(ref: str | None) -> LLMModel | None:
    """ "provider:model_id" -> an enabled catalogue model, or None."""
    if not ref or ":" not in ref:
        return None
    provider, model_id = ref.split(":", 1)
    return LLMModel.objects.filter(provider=provider, model_id=model_id, enabled=True).first()


def demo_model() -> LLMModel | None:
    return resolve_model_ref(DEMO_MODEL_REF) or LLMModel.objects.filter(provider=DEMO_PROVIDER, enabled=True).first()


def default_model_for(user: User) -> LLMModel | None:
    """The model new agents start with: the user's preference if still enabled, else the Demo model."""
    from accounts.models import Profile

    profile = Profile.objects.filter(user=user).select_related("default_model").first()
    if profile and profile.default_model and profile.default_model.enabled:
        return profile.default_model
    return demo_model()


def presets_for(user: User) -> QuerySet[TeamPreset]:
    """Shipped presets first, then the user's own."""
    from django.db.models import Q

    return TeamPreset.objects.filter(Q(owner__isnull=True) | Q(owner=user)).order_by("owner_id", "name")


class PresetError(Exception):
    """A preset cannot be applied (e.g. no usable model); the message is shown to the user."""


@transaction.atomic
def apply_preset(*, session: WritingSession, preset: TeamPreset, default_model: LLMModel | None = None) -> None:
    """Replace the session's team and termination settings with the preset's.

    Shipped presets name the Demo model; a user's own default model wins over it, so a paying user
    gets their preferred model while a new user runs offline. A personal preset keeps its models
    as long as they are still enabled.
    """
    data = preset.data or {}
    fallback = default_model or demo_model()
    session.agents.all().delete()
    agents: list[Agent] = []
    for index, spec in enumerate(data.get("agents", [])):
        model = None
        if preset.owner_id is None and default_model is not None:
            model = default_model
        model = model or resolve_model_ref(spec.get("model")) or fallback
        if model is None:
            raise PresetError("No model is available for this team. Ask an administrator to enable one.")
        agents.append(_create_preset_agent(session=session, index=index, spec=spec, model=model))
    session.flow = preset.flow
    session.max_rounds = int(data.get("max_rounds", session.max_rounds))
    session.score_threshold = data.get("score_threshold")
    threshold_index = data.get("threshold_agent")
    session.threshold_agent = (
        agents[threshold_index] if isinstance(threshold_index, int) and 0 <= threshold_index < len(agents) else None
    )
    session.convergence_percent = data.get("convergence_percent")
    session.credit_budget = data.get("credit_budget")
    session.flow_config = data.get("flow_config") or {}
    # Only the settings a preset carries: never the engine's fields from a possibly stale copy.
    session.save(
        update_fields=[
            "flow",
            "flow_config",
            "max_rounds",
            "score_threshold",
            "threshold_agent",
            "convergence_percent",
            "credit_budget",
            "updated_at",
        ]
    )


def _create_preset_agent(*, session: WritingSession, index: int, spec: dict[str, Any], model: LLMModel) -> Agent:
    """Create the agent at position `index` from one preset agent spec, with its criteria (text capped to fit)."""
    agent = Agent.objects.create(
        session=session,
        order=index,
        name=spec.get("name", f"Agent {index + 1}")[:80],
        role=spec.get("role", "writer")[:40],
        model=model,
        fallback_model=resolve_model_ref(spec.get("fallback_model")),
        role_prompt=spec.get("role_prompt", ""),
        temperature=float(spec.get("temperature", 0.7)),
        max_output_tokens=int(spec.get("max_output_tokens", 2048)),
        thinking_budget_tokens=_thinking_budget(spec.get("thinking_budget_tokens")),
        reasoning_effort=_effort(spec.get("reasoning_effort")),
    )
    Criterion.objects.bulk_create(
        Criterion(
            agent=agent,
            order=i,
            name=c.get("name", "")[:60],
            description=c.get("description", "")[:500],
            weight=float(c.get("weight", 1.0)),
        )
        for i, c in enumerate(spec.get("criteria", []))
    )
    return agent


def _thinking_budget(value: Any) -> int:
    """A preset's thinking budget as a non-negative int; anything unreadable means thinking off."""
    try:
        return min(max(0, int(value or 0)), 63_000)
    except (TypeError, ValueError):
        return 0


def _effort(value: Any) -> str:
    from orchestration.models import ReasoningEffort

    return value if isinstance(value, str) and value in ReasoningEffort.values else ""


def team_data(session: WritingSession) -> dict[str, Any]:
    """The session's team and termination settings in preset data format."""
    agents = list(session.agents.select_related("model", "fallback_model").prefetch_related("criteria"))
    threshold_index = next((i for i, a in enumerate(agents) if a.pk == session.threshold_agent_id), None)
    return {
        "agents": [
            {
                "name": a.name,
                "role": a.role,
                "model": model_ref(a.model),
                "role_prompt": a.role_prompt,
                "temperature": a.temperature,
                "max_output_tokens": a.max_output_tokens,
                "thinking_budget_tokens": a.thinking_budget_tokens,
                "reasoning_effort": a.reasoning_effort,
                "fallback_model": model_ref(a.fallback_model),
                "criteria": [
                    {"name": c.name, "description": c.description, "weight": c.weight} for c in a.criteria.all()
                ],
            }
            for a in agents
        ],
        "max_rounds": session.max_rounds,
        "score_threshold": session.score_threshold,
        "threshold_agent": threshold_index,
        "convergence_percent": session.convergence_percent,
        "credit_budget": session.credit_budget,
        "flow_config": session.flow_config or {},
    }


class PresetNameTaken(PresetError):
    """The user already has a preset under this name (or one that slugifies the same)."""

    def __init__(self, existing: TeamPreset) -> None:
        super().__init__(f"You already have a preset named “{existing.name}”.")
        self.existing = existing


def save_team_as_preset(
    *, session: WritingSession, user: User, name: str, description: str = "", replace: bool = False
) -> TeamPreset:
    """A personal preset (owner=user) holding the session's flow, team and criteria.

    Names are unique per user by their slug ("Critique team" and "critique-team" are the same name):
    raises PresetNameTaken for a taken name unless `replace` is true, which overwrites that preset.
    """
    name = name.strip()
    if not name:
        raise PresetError("Give the preset a name.")
    slug = slugify(name)[:80] or "team"
    existing = TeamPreset.objects.filter(owner=user, slug=slug).first()
    if existing is not None and not replace:
        raise PresetNameTaken(existing)
    preset, _ = TeamPreset.objects.update_or_create(
        owner=user,
        slug=slug,
        defaults={"name": name, "description": description, "flow": session.flow, "data": team_data(session)},
    )
    return preset


@transaction.atomic
def duplicate_session(*, session: WritingSession) -> WritingSession:
    """A new draft with the same settings, team, criteria, references and starting document.

    Raises orchestration.services.ServiceError beyond the owner's session or reference-text quota
    (30 copies of a session with large references added 115 MB in 1.6 s)."""
    from django.db.models import Sum
    from django.db.models.functions import Length

    from orchestration.services import enforce_quota

    owner = session.project.owner
    enforce_quota(user=owner, action="create_session")
    reference_chars = session.references.aggregate(total=Sum(Length("content")))["total"] or 0
    if reference_chars:
        enforce_quota(user=owner, action="store_references", adding=reference_chars)
    copy = WritingSession.objects.create(
        project=session.project,
        title=f"Copy of {session.title}"[:200],
        flow=session.flow,
        brief=session.brief,
        # The starting document is what the user wrote before the run, i.e. version 1 if it exists.
        document=starting_document(session),
        max_rounds=session.max_rounds,
        score_threshold=session.score_threshold,
        convergence_percent=session.convergence_percent,
        credit_budget=session.credit_budget,
        flow_config=session.flow_config or {},
        status=Status.DRAFT,
    )
    agent_map: dict[int, Agent] = {}
    for agent in session.agents.prefetch_related("criteria"):
        new = Agent.objects.create(
            session=copy,
            order=agent.order,
            name=agent.name,
            role=agent.role,
            model=agent.model,
            fallback_model=agent.fallback_model,
            role_prompt=agent.role_prompt,
            temperature=agent.temperature,
            max_output_tokens=agent.max_output_tokens,
            thinking_budget_tokens=agent.thinking_budget_tokens,
            reasoning_effort=agent.reasoning_effort,
            active=agent.active,
        )
        Criterion.objects.bulk_create(
            Criterion(agent=new, name=c.name, description=c.description, weight=c.weight, order=c.order)
            for c in agent.criteria.all()
        )
        agent_map[agent.pk] = new
    if session.threshold_agent_id in agent_map:
        copy.threshold_agent = agent_map[session.threshold_agent_id]
        copy.save(update_fields=["threshold_agent"])
    index_references(
        ReferenceDocument.objects.bulk_create(
            ReferenceDocument(session=copy, title=r.title, content=r.content, source_filename=r.source_filename)
            for r in session.references.all()
        )
    )
    return copy


def starting_document(session: WritingSession) -> str:
    """The document the user gave before the run: the draft's text, or version 1 once it has run."""
    if session.status == Status.DRAFT:
        return session.document
    first = session.versions.order_by("number").first()
    # Version 1 holds the starting document when the engine saved one; otherwise start empty.
    if first is not None and first.turn_id is None:
        return first.content
    return ""
