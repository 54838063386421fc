from .agents import (
    IntrospectView,
    ReactivateView,
    RegisterView,
    RequestCapabilityView,
    RevokeView,
    RotateKeyView,
    StatusView,
)
from .capabilities import DescribeView, ExecuteView, ExecutionStatusView, ListView
from .discovery import DiscoveryView
from .hosts import RevokeHostView, RotateHostKeyView

__all__ = [
    "DescribeView",
    "DiscoveryView",
    "ExecuteView",
    "ExecutionStatusView",
    "IntrospectView",
    "ListView",
    "ReactivateView",
    "RegisterView",
    "RequestCapabilityView",
    "RevokeHostView",
    "RevokeView",
    "RotateHostKeyView",
    "RotateKeyView",
    "StatusView",
]
