// Access tokens on every call, refreshed before they expire.
//
// A TokenSession holds the access and refresh tokens of one signed-in user. Its
// interceptor sets `authorization: Bearer <access token>` on every call; when the
// access token expires within `refreshMarginMs` it first calls
// AuthService.RefreshToken (one refresh at a time, shared by every waiting call),
// and a unary call refused UNAUTHENTICATED is refreshed and retried once.
// Streams are never retried by the interceptor: their request may already be
// consumed, and the proactive refresh keeps their token valid when they start.
// Refresh tokens rotate: each refresh returns a new one, and `onChange` sees it
// (to save it) — or sees `undefined` when the session is gone (revoked, expired).
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { AuthService } from "./gen/cortex/auth/v1/auth_service_pb.js";

/** What a sign-in, registration or refresh hands out. */
export interface Tokens {
  accessToken: string;
  refreshToken: string;
  /** When the access token stops working (ms since the epoch); unknown: never refreshed early. */
  accessTokenExpiresAt?: number;
  /** The session's resource name, `users/{user}/sessions/{session}`. */
  session?: string;
}

/** Tokens from a RegisterResponse, LoginResponse or RefreshTokenResponse. */
export function tokensFrom(response: {
  accessToken: string;
  refreshToken: string;
  accessTokenExpireTime?: Timestamp;
  session?: string;
}): Tokens {
  return {
    accessToken: response.accessToken,
    refreshToken: response.refreshToken,
    accessTokenExpiresAt: response.accessTokenExpireTime
      ? timestampDate(response.accessTokenExpireTime).getTime()
      : undefined,
    session: response.session,
  };
}

export interface TokenSessionOptions {
  /** Tokens to start with (e.g. restored from storage). */
  tokens?: Tokens;
  /** Called with the new tokens after each sign-in or refresh, and `undefined` on sign-out. */
  onChange?: (tokens: Tokens | undefined) => void;
  /** Refresh this long before the access token expires (default 30 s). */
  refreshMarginMs?: number;
  /** The clock, for tests (default Date.now). */
  now?: () => number;
}

const REFRESH_PATH = `/${AuthService.typeName}/RefreshToken`;

export class TokenSession {
  private current: Tokens | undefined;
  private pending: Promise<Tokens> | undefined;
  private readonly auth;
  private readonly options: TokenSessionOptions;

  /**
   * @param transport a transport WITHOUT this session's interceptor, used for
   *   RefreshToken only (the refresh token is the credential of that call).
   */
  constructor(transport: Transport, options: TokenSessionOptions = {}) {
    this.auth = createClient(AuthService, transport);
    this.options = options;
    this.current = options.tokens;
  }

  /** The tokens held now, if signed in. */
  get tokens(): Tokens | undefined {
    return this.current;
  }

  /** Start using these tokens (after Register or Login). */
  set(tokens: Tokens): void {
    this.current = tokens;
    this.options.onChange?.(tokens);
  }

  /** Forget the tokens (after Logout, or when the session was revoked). */
  clear(): void {
    this.current = undefined;
    this.pending = undefined;
    this.options.onChange?.(undefined);
  }

  /** Exchange the refresh token for new tokens now; concurrent callers share one call. */
  refresh(): Promise<Tokens> {
    if (!this.pending) {
      const refreshToken = this.current?.refreshToken;
      if (!refreshToken) {
        return Promise.reject(new ConnectError("not signed in", Code.Unauthenticated));
      }
      this.pending = this.auth
        .refreshToken({ refreshToken })
        .then((response) => {
          const tokens = tokensFrom(response);
          this.set(tokens);
          return tokens;
        })
        .catch((error: unknown) => {
          if (ConnectError.from(error).code === Code.Unauthenticated) this.clear();
          throw error;
        })
        .finally(() => {
          this.pending = undefined;
        });
    }
    return this.pending;
  }

  /** A valid access token: refreshed first when it expires within the margin. */
  async accessToken(): Promise<string | undefined> {
    if (this.pending) return (await this.pending).accessToken;
    const tokens = this.current;
    if (!tokens) return undefined;
    const now = (this.options.now ?? Date.now)();
    const margin = this.options.refreshMarginMs ?? 30_000;
    if (tokens.accessTokenExpiresAt !== undefined && tokens.accessTokenExpiresAt - margin <= now) {
      return (await this.refresh()).accessToken;
    }
    return tokens.accessToken;
  }

  /** The interceptor that attaches (and refreshes) the access token. */
  readonly interceptor: Interceptor = (next) => async (request) => {
    if (request.url.endsWith(REFRESH_PATH)) return next(request);
    const token = await this.accessToken();
    if (token === undefined) return next(request);
    request.header.set("authorization", `Bearer ${token}`);
    try {
      return await next(request);
    } catch (error) {
      if (request.stream || ConnectError.from(error).code !== Code.Unauthenticated) throw error;
      if (!this.current?.refreshToken) throw error;
      // Another call may have refreshed meanwhile: then its token is the one to retry with.
      const latest =
        this.current.accessToken !== token
          ? this.current.accessToken
          : (await this.refresh()).accessToken;
      request.header.set("authorization", `Bearer ${latest}`);
      return next(request);
    }
  };
}
