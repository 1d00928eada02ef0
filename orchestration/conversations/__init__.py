"""Conversations: a durable chat in a project, answered by a triage agent that hands off to specialists.

Modules: models (Conversation, Message), services (every write: create, rename, delete, send, stop,
regenerate, edit-and-rerun), search (full-text search: SQLite FTS5 / PostgreSQL), runner (drives one
reply: triage, handoffs, tools, on the engine's leases, billing and event log), tools, prompts, presets.
See docs/conversations.md.
"""
