from django.apps import AppConfig


class AgentAuthConfig(AppConfig):
    name = "agentauth"
    verbose_name = "Agent Auth"
    # Set here so a project's DEFAULT_AUTO_FIELD never creates phantom migrations.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings
        from django.db.models.signals import pre_delete

        from . import checks  # noqa: F401  (registers the system checks)
        from .capabilities import autodiscover

        autodiscover()
        # Spec §2.6: deleting a user revokes their hosts, cascading to the agents.
        pre_delete.connect(
            _user_deleted, sender=settings.AUTH_USER_MODEL, dispatch_uid="agentauth-user-deleted"
        )


def _user_deleted(sender: object, instance: object, **kwargs: object) -> None:
    from .lifecycle import user_deleted

    user_deleted(instance)
