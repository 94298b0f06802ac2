package cortexclient

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestFromErrorReadsErrorInfoBadRequestAndRetryInfo(t *testing.T) {
	st, err := status.New(codes.InvalidArgument, "bad workspace").WithDetails(
		&errdetails.ErrorInfo{Reason: "INVALID_ARGUMENT", Domain: "cortex", Metadata: map[string]string{"k": "v"}},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "workspace.display_name", Description: "is required"},
		}},
		&errdetails.RetryInfo{RetryDelay: &durationpb.Duration{Seconds: 1, Nanos: 500000000}},
	)
	if err != nil {
		t.Fatal(err)
	}

	e := FromError(st.Err())

	if e.Code != codes.InvalidArgument || e.Reason != "INVALID_ARGUMENT" || e.Domain != "cortex" || e.Metadata["k"] != "v" {
		t.Fatalf("unexpected error %+v", e)
	}
	if len(e.Violations) != 1 || e.Violations[0].Field != "workspace.display_name" {
		t.Fatalf("unexpected violations %+v", e.Violations)
	}
	if !e.HasRetryDelay || e.RetryDelay != 1500*time.Millisecond {
		t.Fatalf("unexpected retry delay %v", e.RetryDelay)
	}
	if status.Code(e) != codes.InvalidArgument || Reason(e) != "INVALID_ARGUMENT" {
		t.Fatal("an *Error must still read as its status")
	}
	if e.Error() != "InvalidArgument (INVALID_ARGUMENT): bad workspace" {
		t.Fatalf("unexpected text %q", e.Error())
	}
}

func TestFromErrorOfNilAndOfAPlainError(t *testing.T) {
	if FromError(nil) != nil {
		t.Fatal("nil must stay nil")
	}
	if e := FromError(errors.New("boom")); e.Code != codes.Unknown || e.Message != "boom" {
		t.Fatalf("unexpected %+v", e)
	}
}

func TestBackoffWaitsAtLeastRetryInfoAndStopsAfterItsAttempts(t *testing.T) {
	b := Backoff{Initial: time.Millisecond, Max: 2 * time.Millisecond, MaxAttempts: 2}
	throttled := &Error{Code: codes.ResourceExhausted, Reason: "TOO_MANY_STREAMS", RetryDelay: time.Second, HasRetryDelay: true}

	first, ok1 := b.next(throttled)
	second, ok2 := b.next(nil)
	_, ok3 := b.next(nil)

	if !ok1 || first != time.Second || !ok2 || second > 2*time.Millisecond || ok3 {
		t.Fatalf("got %v %v, %v %v, %v", first, ok1, second, ok2, ok3)
	}
	b.reset()
	if _, ok := b.next(nil); !ok {
		t.Fatal("a reset backoff must allow attempts again")
	}
	if !retryable(throttled) {
		t.Fatal("a throttled stream must be resumed")
	}
}

func TestRetryableResumesTransportFailuresAndRaisesTheServersOwnErrors(t *testing.T) {
	// What grpc-go reports when Envoy resets a stream whose replica was killed.
	reset := status.Error(codes.Internal, "stream terminated by RST_STREAM with error code: INTERNAL_ERROR")
	withReason := func(code codes.Code, reason string) error {
		st, err := status.New(code, "from the server").WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "cortex"})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"a proxy's RST_STREAM", reset, true},
		{"a refused connection", status.Error(codes.Unavailable, "connection refused"), true},
		{"an unknown transport failure", status.Error(codes.Unknown, "stream removed"), true},
		{"the server draining", withReason(codes.Unavailable, "SERVER_SHUTTING_DOWN"), true},
		{"a slow subscriber", withReason(codes.ResourceExhausted, "SUBSCRIBER_TOO_SLOW"), true},
		{"an expired access token", withReason(codes.Unauthenticated, "TOKEN_EXPIRED"), true},
		{"the server's own INTERNAL", withReason(codes.Internal, "INTERNAL"), false},
		{"a rejected resume token", withReason(codes.InvalidArgument, "INVALID_RESUME_TOKEN"), false},
		{"a missing permission", withReason(codes.PermissionDenied, "PERMISSION_DENIED"), false},
		{"a task that is gone", withReason(codes.NotFound, "TASK_NOT_FOUND"), false},
		{"a quota that does not clear", withReason(codes.ResourceExhausted, "QUOTA_EXCEEDED"), false},
		{"a revoked session", withReason(codes.Unauthenticated, "SESSION_REVOKED"), false},
		{"the caller's own deadline", status.Error(codes.DeadlineExceeded, "context deadline exceeded"), false},
		{"an invalid argument without details", status.Error(codes.InvalidArgument, "bad"), false},
	}
	for _, c := range cases {
		if got := retryable(FromError(c.err)); got != c.want {
			t.Errorf("%s: retryable = %v, want %v", c.name, got, c.want)
		}
	}
}
