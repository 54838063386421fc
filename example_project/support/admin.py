from django.contrib import admin

from .models import Ticket


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    list_display = ["id", "subject", "status", "priority", "created_at", "closed_at"]
    list_filter = ["status", "priority"]
    search_fields = ["subject", "body"]
    readonly_fields = ["created_at"]
