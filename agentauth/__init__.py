"""django-agentauth: the Agent Auth Protocol (v1.0-draft) for Django."""

__version__ = "0.1.0"
