"""The test URLs plus sign-in pages in the states a new project can be in."""

from django.contrib.auth import views as auth_views
from django.urls import path

from agentauth.views.signin import SignInView
from tests.urls import urlpatterns as base_patterns

urlpatterns = [
    *base_patterns,
    # A project without a registration/login.html of its own: agentauth's page is used.
    path(
        "fresh/login/",
        SignInView.as_view(template_name="registration/not-in-this-project.html"),
        name="fresh-login",
    ),
    # Django's LoginView with a template nobody wrote: a 500 on first sign-in.
    path(
        "broken/login/",
        auth_views.LoginView.as_view(template_name="registration/not-in-this-project.html"),
    ),
]
