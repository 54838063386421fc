"""Views agents call directly (see views.py)."""

from django.urls import path

from . import views

app_name = "support"

urlpatterns = [
    path("tickets/<str:ticket_id>", views.ticket_detail, name="ticket-detail"),
    path("api/tickets/<str:ticket_id>/close", views.CloseTicket.as_view(), name="ticket-close"),
    path("escalate", views.escalate, name="escalate"),
]
