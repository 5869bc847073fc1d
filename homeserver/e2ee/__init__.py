"""End-to-end encryption support: the server routes keys and device changes, never sees plaintext."""
