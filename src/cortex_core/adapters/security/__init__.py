"""Security adapters: password hashing and policy, access tokens, login throttling.

Each module implements one port of :mod:`cortex_core.ports`:

- :mod:`.passwords` — ``PasswordHasher`` (argon2id on a bounded thread pool);
- :mod:`.password_policy` — ``PasswordPolicy`` (length, common passwords, email);
- :mod:`.jwt_codec` — ``AccessTokenCodec`` (HS256 JWT with ``kid`` key rotation);
- :mod:`.throttle` — ``LoginThrottle`` in process (on Redis: ``adapters/redis/throttle.py``).

Importing this package does no I/O; see ``docs/security.md`` for the policies.
"""
