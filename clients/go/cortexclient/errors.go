package cortexclient

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// FieldViolation is one offending request field; Field is the proto path
// ("workspace.display_name").
type FieldViolation struct {
	Field       string
	Description string
}

// Error is a failed Cortex call with the details of its google.rpc.Status.
// It keeps the status, so status.Code(err) and status.FromError(err) still work.
type Error struct {
	Code     codes.Code
	Message  string
	Reason   string            // ErrorInfo.reason, e.g. "TOKEN_EXPIRED"
	Domain   string            // ErrorInfo.domain, "cortex"
	Metadata map[string]string // ErrorInfo.metadata, e.g. "resume_token"
	// Violations are the BadRequest field violations (INVALID_ARGUMENT).
	Violations []FieldViolation
	// RetryDelay is RetryInfo.retry_delay; HasRetryDelay says whether there was one.
	RetryDelay    time.Duration
	HasRetryDelay bool
	status        *status.Status
}

func (e *Error) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("%s (%s): %s", e.Code, e.Reason, e.Message)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// GRPCStatus lets status.FromError and status.Code see through an *Error.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// FromError returns err as an *Error (nil for nil). An error that is not a gRPC status
// (a cancelled context, say) becomes Code Unknown with the error's text.
func FromError(err error) *Error {
	if err == nil {
		return nil
	}
	var typed *Error
	if errors.As(err, &typed) {
		return typed
	}
	st, ok := status.FromError(err)
	if !ok {
		st = status.New(codes.Unknown, err.Error())
	}
	out := &Error{Code: st.Code(), Message: st.Message(), Metadata: map[string]string{}, status: st}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			out.Reason, out.Domain = d.GetReason(), d.GetDomain()
			for k, v := range d.GetMetadata() {
				out.Metadata[k] = v
			}
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				out.Violations = append(out.Violations, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		case *errdetails.RetryInfo:
			if delay := d.GetRetryDelay(); delay != nil {
				out.RetryDelay = time.Duration(delay.GetSeconds())*time.Second + time.Duration(delay.GetNanos())
				out.HasRetryDelay = true
			}
		}
	}
	return out
}

// Reason is the ErrorInfo reason of err, or "".
func Reason(err error) string {
	if e := FromError(err); e != nil {
		return e.Reason
	}
	return ""
}
