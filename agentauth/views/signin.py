"""A sign-in page for projects that have none yet.

The approval pages send people to ``LOGIN_URL``; Django's ``LoginView`` needs a
``registration/login.html`` that a new project does not have, so the first approval would end in
``TemplateDoesNotExist``. This view is Django's own (safe ``next`` handling, CSRF, session key
rotation) and renders the project's ``registration/login.html`` when there is one, else ours.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import views as auth_views

from ..conf import app_settings


class SignInView(auth_views.LoginView):
    template_name = "registration/login.html"
    fallback_template_name = "agentauth/login.html"

    def get_template_names(self) -> list[str]:
        return [self.template_name, self.fallback_template_name]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        # Inside the site's look, like the other pages (AGENTAUTH_BASE_TEMPLATE).
        return {**super().get_context_data(**kwargs), "agentauth_base": app_settings.BASE_TEMPLATE}
