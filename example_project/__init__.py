"""Example project for django-agentauth: the seed article's ``support-api``."""

from .celery import app as celery_app

__all__ = ["celery_app"]
