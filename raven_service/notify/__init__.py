"""Outbound notifications (alert webhooks)."""
