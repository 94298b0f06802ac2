"""``cortex.sessions.v1.SessionService``: where a user is signed in."""

from __future__ import annotations

from cortex.sessions.v1 import session_service_pb2 as pb
from cortex.sessions.v1 import session_service_pb2_grpc as pb_grpc

from cortex_core.api import convert
from cortex_core.api.context import ServicerContext, current_caller
from cortex_core.domain import names
from cortex_core.domain.paging import PageRequest
from cortex_core.services.identity import Identity


class SessionService(pb_grpc.SessionServiceServicer):
    def __init__(self, identity: Identity) -> None:
        self._identity = identity

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: ServicerContext
    ) -> pb.ListSessionsResponse:
        (user_id,) = convert.parse_name(request.parent or "users/-", names.USER, "parent")
        caller = current_caller()
        page = await self._identity.list_sessions(
            caller, user_id, PageRequest.parse(request.page_size, request.page_token)
        )
        return pb.ListSessionsResponse(
            sessions=[convert.session(s, current_session_id=caller.session_id) for s in page.items],
            next_page_token=page.next_page_token,
        )

    async def RevokeSession(
        self, request: pb.RevokeSessionRequest, context: ServicerContext
    ) -> pb.RevokeSessionResponse:
        user_id, session_id = convert.parse_name(request.name, names.SESSION, "name")
        caller = current_caller()
        revoked = await self._identity.revoke_session(caller, user_id, session_id)
        return pb.RevokeSessionResponse(
            session=convert.session(revoked, current_session_id=caller.session_id)
        )
