"""``cortex.auth.v1.AuthService``: accounts, sign-in and token refresh."""

from __future__ import annotations

from typing import Any

from cortex.auth.v1 import auth_service_pb2 as pb
from cortex.auth.v1 import auth_service_pb2_grpc as pb_grpc

from cortex_core.api import convert
from cortex_core.api.context import ServicerContext, client_info, current_caller
from cortex_core.services.identity import Identity, SignIn


def _tokens(sign_in: SignIn) -> dict[str, Any]:
    return {
        "access_token": sign_in.access.token,
        "refresh_token": sign_in.refresh_token,
        "access_token_expire_time": convert.timestamp(sign_in.access.expire_time),
        "refresh_token_expire_time": convert.timestamp(sign_in.session.expire_time),
        "session": sign_in.session.name,
    }


class AuthService(pb_grpc.AuthServiceServicer):
    def __init__(self, identity: Identity) -> None:
        self._identity = identity

    async def Register(
        self, request: pb.RegisterRequest, context: ServicerContext
    ) -> pb.RegisterResponse:
        sign_in = await self._identity.register(
            request.email, request.password, request.display_name, client_info(context)
        )
        return pb.RegisterResponse(user=convert.user(sign_in.user), **_tokens(sign_in))

    async def Login(self, request: pb.LoginRequest, context: ServicerContext) -> pb.LoginResponse:
        sign_in = await self._identity.login(request.email, request.password, client_info(context))
        return pb.LoginResponse(user=convert.user(sign_in.user), **_tokens(sign_in))

    async def RefreshToken(
        self, request: pb.RefreshTokenRequest, context: ServicerContext
    ) -> pb.RefreshTokenResponse:
        sign_in = await self._identity.refresh(request.refresh_token, client_info(context))
        return pb.RefreshTokenResponse(**_tokens(sign_in))

    async def Logout(
        self, request: pb.LogoutRequest, context: ServicerContext
    ) -> pb.LogoutResponse:
        await self._identity.logout(current_caller())
        return pb.LogoutResponse()

    async def GetCurrentUser(
        self, request: pb.GetCurrentUserRequest, context: ServicerContext
    ) -> pb.GetCurrentUserResponse:
        return pb.GetCurrentUserResponse(user=convert.user(current_caller().user))

    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: ServicerContext
    ) -> pb.ChangePasswordResponse:
        user, revoked = await self._identity.change_password(
            current_caller(), request.current_password, request.new_password
        )
        return pb.ChangePasswordResponse(user=convert.user(user), revoked_session_count=revoked)
