from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "atelier.core"
    label = "core"
    verbose_name = "Atelier core"

    def ready(self) -> None:
        from django.conf import settings

        if settings.EMBEDDED_REDIS:
            from atelier.core.embedded_redis import ensure_running

            ensure_running(settings.EMBEDDED_REDIS_SOCKET)
