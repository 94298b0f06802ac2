"""Event log adapters: in-process (embedded default) and Redis Streams (shared by replicas)."""
