"""One implementation per port and backend (SQL, Redis, in-process, providers)."""
