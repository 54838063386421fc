"""Project views guarded by capabilities (``@requires_capability``) will be added here."""

from django.urls import URLPattern

app_name = "support"

urlpatterns: list[URLPattern] = []
