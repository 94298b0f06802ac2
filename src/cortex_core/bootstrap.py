"""The composition root: the only place that builds engines, clients and servers.

Importing this module does nothing; :func:`bootstrap` builds an :class:`App`
from :class:`~cortex_core.settings.Settings`, choosing the embedded default or
the production adapter for every port.
"""

from __future__ import annotations

import dataclasses

from cortex_core.adapters.clock import SystemClock
from cortex_core.adapters.sql.database import SqlDatabase
from cortex_core.api.access_log import AccessLog
from cortex_core.api.health import HealthReporter
from cortex_core.api.registry import service_names
from cortex_core.api.streams import StreamRegistry
from cortex_core.ports import Clock, Database
from cortex_core.settings import Settings


@dataclasses.dataclass(slots=True)
class App:
    """Everything a running server owns, built once per process."""

    settings: Settings
    clock: Clock
    database: Database
    health: HealthReporter
    streams: StreamRegistry
    access_log: AccessLog | None
    servicers: dict[str, object]


def bootstrap(
    settings: Settings, *, database: Database | None = None, clock: Clock | None = None
) -> App:
    """Build the application for ``settings``; ports may be overridden by tests."""
    return App(
        settings=settings,
        clock=clock or SystemClock(),
        database=database or SqlDatabase.from_url(settings.effective_database_url),
        health=HealthReporter(service_names()),
        streams=StreamRegistry(),
        access_log=AccessLog(settings.log_format) if settings.access_log else None,
        servicers={},
    )
