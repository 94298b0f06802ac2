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
	if !retryable(throttled) || retryable(&Error{Code: codes.NotFound}) || !retryable(&Error{Code: codes.Unavailable}) {
		t.Fatal("unexpected retryable verdicts")
	}
}
