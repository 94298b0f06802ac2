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

// retryable says whether reconnecting after err can succeed: the server drains or
// restarts, a stream cap or rate limit clears, a slow subscriber resumes, or the access
// token expired mid-stream (the next open refreshes it).
func retryable(err *Error) bool {
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
