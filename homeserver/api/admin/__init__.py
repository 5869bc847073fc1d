"""Admin API routes (Synapse-compatible shapes where admin tools expect them)."""
