package cortexclient

import (
	"math/rand"
	"time"

	"google.golang.org/grpc/codes"
)

// Backoff is exponential backoff with full jitter for reconnecting streams. A zero value
// uses 200ms doubling to 10s and gives up after 8 consecutive failures; MaxAttempts < 0
// reconnects forever.
type Backoff struct {
	Initial     time.Duration
	Max         time.Duration
	MaxAttempts int
	failures    int
}

func (b *Backoff) reset() { b.failures = 0 }

// next returns the wait before the next attempt (at least err's RetryInfo delay) and
// false when the attempts are spent.
func (b *Backoff) next(err *Error) (time.Duration, bool) {
	initial, max, attempts := b.Initial, b.Max, b.MaxAttempts
	if initial <= 0 {
		initial = 200 * time.Millisecond
	}
	if max <= 0 {
		max = 10 * time.Second
	}
	if attempts == 0 {
		attempts = 8
	}
	if attempts > 0 && b.failures >= attempts {
		return 0, false
	}
	ceiling := initial << uint(b.failures)
	if ceiling > max || ceiling <= 0 {
		ceiling = max
	}
	b.failures++
	wait := time.Duration(rand.Int63n(int64(ceiling) + 1))
	if err != nil && err.HasRetryDelay && err.RetryDelay > wait {
		wait = err.RetryDelay
	}
	return wait, true
}

// retryable says whether reopening a resumable stream after err can succeed. The rule:
//
//   - an error without an ErrorInfo reason came from the transport, not from a Cortex
//     server, and is resumed when its code is Unavailable (a refused or dropped
//     connection), Internal or Unknown (a stream reset by a proxy: behind Envoy a killed
//     replica's stream ends Internal "stream terminated by RST_STREAM with error code:
//     INTERNAL_ERROR", not Unavailable);
//   - an error with one is the server's, and is resumed only for Unavailable (any reason:
//     the server drains or restarts), ResourceExhausted SUBSCRIBER_TOO_SLOW,
//     TOO_MANY_STREAMS, RATE_LIMITED, TOO_MANY_REQUESTS, and Unauthenticated
//     TOKEN_EXPIRED (the next open refreshes the token).
//
// Everything else is returned: InvalidArgument, PermissionDenied, NotFound,
// INVALID_RESUME_TOKEN, a server's own Internal (it has a reason), and DeadlineExceeded
// (the helpers set no per-attempt deadline, so it is the caller's).
func retryable(err *Error) bool {
	if err.Reason == "" {
		switch err.Code {
		case codes.Unavailable, codes.Internal, codes.Unknown:
			return true
		}
		return false
	}
	switch err.Code {
	case codes.Unavailable:
		return true
	case codes.ResourceExhausted:
		switch err.Reason {
		case "SUBSCRIBER_TOO_SLOW", "TOO_MANY_STREAMS", "RATE_LIMITED", "TOO_MANY_REQUESTS":
			return true
		}
	case codes.Unauthenticated:
		return err.Reason == "TOKEN_EXPIRED"
	}
	return false
}
