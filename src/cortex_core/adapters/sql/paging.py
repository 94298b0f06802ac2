"""Keyset pagination shared by every SQL repository: stable pages on (time, id)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa

from cortex_core.adapters.sql import tables
from cortex_core.adapters.sql.connection import Connection
from cortex_core.domain.paging import (
    Page,
    PageRequest,
    encode_token,
    invalid_page_token,
    token_time,
)

T = TypeVar("T")


async def paginate(
    conn: Connection,
    query: sa.Select[Any],
    time_column: sa.ColumnElement[Any],
    id_column: sa.ColumnElement[Any],
    page: PageRequest,
    convert: Callable[[Any], T],
    key: Callable[[T], tuple[datetime, str]],
    *,
    newest_first: bool = False,
    scope: Sequence[str] = (),
) -> Page[T]:
    """Keyset pagination on (time, id): stable while rows are added.

    ``scope`` (e.g. a filter value) is written into the page token and must come
    back unchanged, so a token cannot be replayed against a different listing.
    """
    if newest_first:
        query = query.order_by(time_column.desc(), id_column.desc())
    else:
        query = query.order_by(time_column, id_column)
    if page.after is not None:
        if len(page.after) != 2 + len(scope) or page.after[2:] != tuple(scope):
            raise invalid_page_token("use a token from the same listing")
        after_time = token_time(page.after[0])
        bound = sa.tuple_(sa.literal(after_time, tables.UtcDateTime), sa.literal(page.after[1]))
        row_key = sa.tuple_(time_column, id_column)
        query = query.where(row_key < bound if newest_first else row_key > bound)
    rows = (await conn.execute(query.limit(page.size + 1))).all()
    items = [convert(row) for row in rows[: page.size]]
    token = ""
    if len(rows) > page.size:
        last_time, last_id = key(items[-1])
        token = encode_token((last_time.isoformat(), last_id, *scope))
    return Page(items=items, next_page_token=token)
