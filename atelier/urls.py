from django.contrib import admin
from django.urls import include, path

from api.v1 import api as api_v1
from atelier.core import views as core_views
from atelier.core.metrics_view import metrics_view

urlpatterns = [
    path("", core_views.home, name="home"),
    path("healthz", core_views.healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", api_v1.urls),
    path("accounts/", include("allauth.urls")),
    path("accounts/", include("accounts.urls")),
    path("settings/api-keys/", include("api.views")),
    path("billing/", include("billing.urls")),
    path("stripe/", include("djstripe.urls", namespace="djstripe")),
    path("", include("orchestration.urls")),
]

handler400 = "atelier.core.views.error_400"
handler403 = "atelier.core.views.error_403"
handler404 = "atelier.core.views.error_404"
handler500 = "atelier.core.views.error_500"

admin.site.site_header = "Atelier operations"
admin.site.site_title = "Atelier admin"
