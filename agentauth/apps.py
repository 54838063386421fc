from importlib.util import find_spec

from django.apps import AppConfig


class AgentAuthConfig(AppConfig):
    name = "agentauth"
    verbose_name = "Agent Auth"
    # Set here so a project's DEFAULT_AUTO_FIELD never creates phantom migrations.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings
        from django.contrib.auth.signals import user_logged_in
        from django.db.models.signals import pre_delete

        from . import checks  # noqa: F401  (registers the system checks)
        from .capabilities import autodiscover
        from .extras import installed

        if installed("celery"):  # the [celery] extra; check E060 says when it is needed
            from . import tasks  # noqa: F401  (registers the Celery tasks, dispatched by name)

        autodiscover()
        if find_spec("drf_spectacular") is not None:
            from . import spectacular  # noqa: F401  (registers the authentication extension)
        # Signing in is a fresh authentication for the approval pages (spec §8.11).
        user_logged_in.connect(_logged_in, dispatch_uid="agentauth-fresh-auth")
        # Spec §2.6: deleting a user revokes their hosts, cascading to the agents.
        pre_delete.connect(
            _user_deleted, sender=settings.AUTH_USER_MODEL, dispatch_uid="agentauth-user-deleted"
        )


def _user_deleted(sender: object, instance: object, **kwargs: object) -> None:
    from .agents import user_deleted

    user_deleted(instance)


def _logged_in(sender: object, request: object, user: object, **kwargs: object) -> None:
    from .approvals import mark_authenticated

    session = getattr(request, "session", None)
    if session is not None:
        mark_authenticated(session)
