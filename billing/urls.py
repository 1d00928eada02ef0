from django.urls import path

from billing import views

urlpatterns = [
    path("", views.billing_page, name="billing"),
]
urlpatterns += [path("pricing/", views.pricing_page, name="pricing")]
