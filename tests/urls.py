from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from agentauth.urls import well_known_urlpatterns

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("api/auth/", include("agentauth.urls")),
    path("", include(well_known_urlpatterns)),
    path("support/", include("example_project.support.urls")),
]
