"""The one way to build a Redis client: a bounded, shared connection pool.

Bootstrap builds one client per process with :func:`redis_client` and hands it
to every Redis adapter (cache, event log, login throttle); none of them closes
it, bootstrap does at shutdown. The pool opens at most ``max_connections``
connections; a caller that finds them all busy waits up to ``timeout`` seconds
for one and then gets ``redis.exceptions.ConnectionError``, which each adapter
already treats as Redis being unavailable. Connecting, and waiting for a reply,
are bounded by the same ``timeout``, so an unreachable Redis fails a call within
about ``2 * timeout`` (one quick retry replaces a connection Redis dropped while
idle). Building the client does no I/O: connections open on first use.
"""

from __future__ import annotations

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

DEFAULT_MAX_CONNECTIONS = 50
DEFAULT_TIMEOUT = 2.0
#: How often an idle pooled connection is checked (PING) before it is reused.
HEALTH_CHECK_INTERVAL = 30


def redis_client(
    url: str,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    timeout: float = DEFAULT_TIMEOUT,
) -> redis.Redis:
    """A client over a new bounded pool; closing the client closes the pool."""
    if max_connections < 1:
        raise ValueError("max_connections must be at least 1")
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=HEALTH_CHECK_INTERVAL,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
    )
    return redis.Redis.from_pool(pool)
