"""A project that mounts the protocol at the site root, with its own pages after it."""

from django.http import HttpRequest, HttpResponse
from django.urls import include, path


def project_page(request: HttpRequest) -> HttpResponse:
    return HttpResponse("project page")


urlpatterns = [
    path("", include("agentauth.urls")),
    path("shop/basket", project_page),
]
