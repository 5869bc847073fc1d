"""Account data: a user's private JSON objects, global and per room, including room tags."""
