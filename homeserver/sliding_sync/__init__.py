"""Simplified sliding sync (MSC4186 as Synapse serves it; Element X's sync)."""
