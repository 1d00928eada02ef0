from orchestration.views import builder, documents, live, projects, reports

urlpatterns = projects.urls + builder.urls + documents.urls + live.urls + reports.urls
