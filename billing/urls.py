from django.urls import path

from billing import views

urlpatterns = [
    path("", views.billing_page, name="billing"),
    path("pricing/", views.pricing_page, name="pricing"),
    path("checkout/", views.checkout_view, name="billing_checkout"),
    path("portal/", views.portal_view, name="billing_portal"),
]
