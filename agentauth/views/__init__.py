from .agents import (
    IntrospectView,
    RegisterView,
    RequestCapabilityView,
    RevokeView,
    StatusView,
)
from .capabilities import DescribeView, ExecuteView, ExecutionStatusView, ListView
from .device import DeviceView
from .discovery import DiscoveryView
from .hosts import RevokeHostView

__all__ = [
    "DescribeView",
    "DeviceView",
    "DiscoveryView",
    "ExecuteView",
    "ExecutionStatusView",
    "IntrospectView",
    "ListView",
    "RegisterView",
    "RequestCapabilityView",
    "RevokeHostView",
    "RevokeView",
    "StatusView",
]
