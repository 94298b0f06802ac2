"""Token values exchanged between the token codec and the identity use cases."""

from __future__ import annotations

import dataclasses
from datetime import datetime


@dataclasses.dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    token_id: str
    expire_time: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a verified access token says: who, which session, until when."""

    user_id: str
    session_id: str
    token_id: str
    issue_time: datetime
    expire_time: datetime
