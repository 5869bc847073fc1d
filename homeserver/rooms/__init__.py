"""Rooms: the one event pipeline every event goes through, local or remote, and room creation."""
