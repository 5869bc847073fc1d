"""Ephemeral data around rooms: typing notifications, receipts, presence."""
