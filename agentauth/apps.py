from django.apps import AppConfig


class AgentAuthConfig(AppConfig):
    name = "agentauth"
    verbose_name = "Agent Auth"
    # Set here so a project's DEFAULT_AUTO_FIELD never creates phantom migrations.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from .capabilities import autodiscover

        autodiscover()
