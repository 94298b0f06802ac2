package cortexclient

import (
	"context"
	"sync"
	"time"

	authv1 "github.com/cortexcore/cortex-core/generated/go/cortex/auth/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
)

const authService = "/cortex.auth.v1.AuthService/"

// publicMethods are sent without a token (and so never trigger a refresh).
var publicMethods = map[string]bool{
	authService + "Register":     true,
	authService + "Login":        true,
	authService + "RefreshToken": true,
}

// Tokens are one sign-in's tokens.
type Tokens struct {
	AccessToken  string
	RefreshToken string
	AccessExpiry time.Time // zero: unknown (never refreshed early)
	Session      string
}

type tokenResponse interface {
	GetAccessToken() string
	GetRefreshToken() string
	GetSession() string
}

func tokensFrom(r tokenResponse, expiry interface{ AsTime() time.Time }) Tokens {
	t := Tokens{AccessToken: r.GetAccessToken(), RefreshToken: r.GetRefreshToken(), Session: r.GetSession()}
	if expiry != nil {
		t.AccessExpiry = expiry.AsTime()
	}
	return t
}

// TokenSource attaches "authorization: Bearer <access token>" to every RPC except
// Register, Login and RefreshToken, and keeps the token fresh. Refresh tokens are
// single-use (presenting one twice revokes the session), so refreshes are serialised:
// callers that saw the same stale token share one RefreshToken. Safe for concurrent use.
type TokenSource struct {
	// OnTokens, when set, is called with every new Tokens (persist the rotated refresh
	// token there). It runs with the source's lock held: do not call back into it.
	OnTokens func(Tokens)
	// Margin is how long before expiry a token is refreshed (default 30s).
	Margin time.Duration
	// AllowInsecure lets the credentials travel over a plaintext connection
	// (grpc.WithInsecure); TLS connections never need it.
	AllowInsecure bool

	mu        sync.Mutex
	tokens    Tokens
	auth      authv1.AuthServiceClient
	refreshes int
}

// NewTokenSource starts from stored tokens (a refresh token alone is enough) or none.
func NewTokenSource(tokens Tokens) *TokenSource { return &TokenSource{tokens: tokens} }

// Bind names the connection RefreshToken is sent on (usually the one the source signs).
func (s *TokenSource) Bind(conn grpc.ClientConnInterface) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.auth = authv1.NewAuthServiceClient(conn)
}

// Tokens returns the current tokens.
func (s *TokenSource) Tokens() Tokens {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokens
}

// Refreshes counts the RefreshToken calls made.
func (s *TokenSource) Refreshes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshes
}

// SetTokens adopts a sign-in (OnTokens hears of it).
func (s *TokenSource) SetTokens(t Tokens) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setLocked(t)
}

func (s *TokenSource) setLocked(t Tokens) {
	s.tokens = t
	if s.OnTokens != nil {
		s.OnTokens(t)
	}
}

// Register creates an account and signs in as it.
func (s *TokenSource) Register(ctx context.Context, email, password, displayName string) (*authv1.RegisterResponse, error) {
	r, err := s.client().Register(ctx, &authv1.RegisterRequest{Email: email, Password: password, DisplayName: displayName})
	if err != nil {
		return nil, FromError(err)
	}
	s.SetTokens(tokensFrom(r, r.GetAccessTokenExpireTime()))
	return r, nil
}

// Login signs in; every later call on the bound connection carries the session's token.
func (s *TokenSource) Login(ctx context.Context, email, password string) (*authv1.LoginResponse, error) {
	r, err := s.client().Login(ctx, &authv1.LoginRequest{Email: email, Password: password})
	if err != nil {
		return nil, FromError(err)
	}
	s.SetTokens(tokensFrom(r, r.GetAccessTokenExpireTime()))
	return r, nil
}

func (s *TokenSource) client() authv1.AuthServiceClient {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.auth == nil {
		panic("cortexclient: TokenSource.Bind was not called")
	}
	return s.auth
}

// Refresh exchanges the refresh token for new tokens now and returns the new access
// token. A failure is an *Error (e.g. REFRESH_TOKEN_REUSED: sign in again).
func (s *TokenSource) Refresh(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshLocked(ctx)
}

// refreshUnlessReplaced refreshes unless the access token is no longer seen (the one a
// call was sent or refused with): then another goroutine refreshed meanwhile, and the
// single-use refresh token must not be spent again.
func (s *TokenSource) refreshUnlessReplaced(ctx context.Context, seen string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tokens.AccessToken != seen {
		return s.tokens.AccessToken, nil
	}
	return s.refreshLocked(ctx)
}

func (s *TokenSource) refreshLocked(ctx context.Context) (string, error) {
	if s.tokens.RefreshToken == "" || s.auth == nil {
		return "", &Error{Code: codes.Unauthenticated, Reason: "TOKEN_MISSING", Message: "cortexclient: sign in first (no refresh token, or Bind was not called)"}
	}
	r, err := s.auth.RefreshToken(ctx, &authv1.RefreshTokenRequest{RefreshToken: s.tokens.RefreshToken})
	if err != nil {
		return "", FromError(err)
	}
	s.refreshes++
	s.setLocked(tokensFrom(r, r.GetAccessTokenExpireTime()))
	return s.tokens.AccessToken, nil
}

// current is the token to send now, refreshed first when it is about to expire.
func (s *TokenSource) current(ctx context.Context) (string, error) {
	margin := s.Margin
	if margin <= 0 {
		margin = 30 * time.Second
	}
	t := s.Tokens()
	stale := t.AccessToken == "" || (!t.AccessExpiry.IsZero() && time.Until(t.AccessExpiry) < margin)
	if stale && t.RefreshToken != "" {
		return s.refreshUnlessReplaced(ctx, t.AccessToken)
	}
	return t.AccessToken, nil
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (s *TokenSource) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if info, ok := credentials.RequestInfoFromContext(ctx); ok && publicMethods[info.Method] {
		return nil, nil
	}
	token, err := s.current(ctx)
	if err != nil || token == "" {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (s *TokenSource) RequireTransportSecurity() bool { return !s.AllowInsecure }

func refreshable(err error) bool {
	e := FromError(err)
	return e != nil && e.Code == codes.Unauthenticated && (e.Reason == "TOKEN_EXPIRED" || e.Reason == "TOKEN_INVALID")
}

// UnaryInterceptor repeats a call once, after a refresh, when it failed
// UNAUTHENTICATED/TOKEN_EXPIRED or TOKEN_INVALID.
func (s *TokenSource) UnaryInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply interface{}, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if publicMethods[method] { // RefreshToken itself runs under the source's lock
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		sent := s.Tokens().AccessToken
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err == nil || !refreshable(err) {
			return err
		}
		if _, rerr := s.refreshUnlessReplaced(ctx, sent); rerr != nil {
			return err
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// StreamInterceptor reopens a server stream once, after a refresh, when it failed
// UNAUTHENTICATED/TOKEN_EXPIRED or TOKEN_INVALID before its first message (a message
// already received is never received twice).
func (s *TokenSource) StreamInterceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if publicMethods[method] || desc.ClientStreams || !desc.ServerStreams {
			return streamer(ctx, desc, cc, method, opts...)
		}
		sent := s.Tokens().AccessToken
		stream, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return stream, err
		}
		open := func() (grpc.ClientStream, error) { return streamer(ctx, desc, cc, method, opts...) }
		return &retryingStream{ClientStream: stream, source: s, open: open, sent: sent, ctx: ctx}, nil
	}
}

type retryingStream struct {
	grpc.ClientStream
	source   *TokenSource
	open     func() (grpc.ClientStream, error)
	ctx      context.Context
	sent     string
	request  interface{}
	received bool
	retried  bool
}

func (r *retryingStream) SendMsg(m interface{}) error {
	r.request = m
	return r.ClientStream.SendMsg(m)
}

func (r *retryingStream) RecvMsg(m interface{}) error {
	err := r.ClientStream.RecvMsg(m)
	if err == nil {
		r.received = true
		return nil
	}
	if r.received || r.retried || r.request == nil || !refreshable(err) {
		return err
	}
	r.retried = true
	if _, rerr := r.source.refreshUnlessReplaced(r.ctx, r.sent); rerr != nil {
		return err
	}
	stream, oerr := r.open()
	if oerr != nil {
		return oerr
	}
	if serr := stream.SendMsg(r.request); serr != nil {
		return serr
	}
	if cerr := stream.CloseSend(); cerr != nil {
		return cerr
	}
	r.ClientStream = stream
	return r.RecvMsg(m)
}

// DialOptions are what a connection signed by s needs: the per-RPC credentials and
// the refresh-and-retry interceptors. Call s.Bind(conn) on the connection they built.
func (s *TokenSource) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithPerRPCCredentials(s),
		grpc.WithUnaryInterceptor(s.UnaryInterceptor()),
		grpc.WithStreamInterceptor(s.StreamInterceptor()),
	}
}

// Dial connects to target with s signing every call (and binds s to the connection).
// Pass grpc.WithInsecure() (and set s.AllowInsecure) or TLS credentials in opts.
func Dial(ctx context.Context, target string, s *TokenSource, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	conn, err := grpc.DialContext(ctx, target, append(s.DialOptions(), opts...)...)
	if err != nil {
		return nil, err
	}
	s.Bind(conn)
	return conn, nil
}
