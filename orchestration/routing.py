from django.urls import path

from orchestration import consumers

websocket_urlpatterns = [
    path("ws/sessions/<int:session_id>/", consumers.SessionConsumer.as_asgi()),
    path("ws/conversations/<int:conversation_id>/", consumers.ConversationConsumer.as_asgi()),
]
