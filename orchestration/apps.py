from typing import Any

from django.apps import AppConfig


class OrchestrationConfig(AppConfig):
    name = "orchestration"
    verbose_name = "Orchestration"

    def ready(self) -> None:
        import gc
        import sys

        from orchestration import checks  # noqa: F401 - registers the system checks

        if "qcluster" in sys.argv:
            # Import the engine and the provider SDKs before django-q2 forks its workers, so the
            # first turn on each worker does not pay a second of imports.
            from django_q.signals import post_spawn

            import orchestration.engine
            import orchestration.providers.http_adapters  # noqa: F401

            # Everything imported so far lives as long as the process: keep it out of the garbage
            # collector's full passes. A forked worker's first full collection walked ~370k objects,
            # ~310k of them inherited from here: a 0.3-1.4 s pause mid-reply that held every push (issue 15:
            # chunk latency p99), touching every page they live on (copy-on-write).
            gc.freeze()
            post_spawn.connect(_start_watchdog, dispatch_uid="atelier-watchdog")


def _start_watchdog(sender: object, proc_name: str = "", **kwargs: Any) -> None:
    """Each django-q2 worker process, once forked, watches for sessions whose executor died."""
    from orchestration.tasks import start_watchdog_thread

    start_watchdog_thread()
