from orchestration.views import builder, conversations, documents, live, projects, reports, suggest

urlpatterns = (
    projects.urls + builder.urls + documents.urls + live.urls + reports.urls + suggest.urls + conversations.urls
)
