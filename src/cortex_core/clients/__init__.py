"""Clients of the Cortex API that ship with the server (the terminal chat)."""
