from orchestration.views import builder, documents, live, projects

urlpatterns = projects.urls + builder.urls + documents.urls + live.urls
