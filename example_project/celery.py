"""The example project's Celery app.

django-agentauth ships ``@shared_task`` tasks only; the project owns the Celery app, the broker
and the beat schedule (see ``CELERY_BEAT_SCHEDULE`` in settings).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

app = Celery("example_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
