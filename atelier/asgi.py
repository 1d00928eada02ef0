import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atelier.settings")
django_asgi_app = get_asgi_application()

# Imported after Django is set up (consumers import models).
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

# The provider SDKs take one to several seconds to import, and the builder needs them (which models
# take a temperature): the http_adapters import pays that while the server starts, not on a first page.
import orchestration.providers.http_adapters  # noqa: E402, F401
from orchestration.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
