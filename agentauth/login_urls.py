"""``path("accounts/", include("agentauth.login_urls"))``: sign-in and sign-out at Django's
default ``LOGIN_URL`` (``/accounts/login/``), for projects without their own."""

from django.contrib.auth import views as auth_views
from django.urls import path

from .views.signin import SignInView

urlpatterns = [
    path("login/", SignInView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="login"), name="logout"),
]
