from .agents import RegisterView, RevokeView, StatusView
from .device import DeviceView
from .discovery import DiscoveryView
from .hosts import RevokeHostView

__all__ = [
    "DeviceView",
    "DiscoveryView",
    "RegisterView",
    "RevokeHostView",
    "RevokeView",
    "StatusView",
]
