"""Accounts, devices, access tokens, passwords, user-interactive auth and registration."""
