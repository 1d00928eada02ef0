from django.apps import AppConfig


class OrchestrationConfig(AppConfig):
    name = "orchestration"
    verbose_name = "Orchestration"

    def ready(self) -> None:
        import sys

        if "qcluster" in sys.argv:
            # Import the engine and the provider SDKs before django-q2 forks its workers, so the
            # first turn on each worker does not pay a second of imports.
            import orchestration.engine
            import orchestration.providers.http_adapters  # noqa: F401
