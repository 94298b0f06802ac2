"""The Redis adapters: one shared client, the cache, the event log and the login throttle."""
