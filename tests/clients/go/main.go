// Command go-client proves the generated Go stubs make a real gRPC round trip:
// it calls cortex.experts.v1.ExpertService/ListExperts through the generated
// client and prints the status code it got, as `status=<CODE_NAME>`.
//
// Usage: go-client HOST:PORT
//
// Exit status: 0 when a response or a gRPC status came back from the server
// (whatever the code), 1 on usage errors, 2 when no round trip happened
// (connection refused, deadline exceeded before any answer).
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	expertsv1 "github.com/cortexcore/cortex-core/generated/go/cortex/experts/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go-client HOST:PORT")
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	conn, err := grpc.DialContext(ctx, os.Args[1], grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fmt.Fprintf(os.Stderr, "dial %s: %v\n", os.Args[1], err)
		os.Exit(2)
	}
	defer conn.Close()

	client := expertsv1.NewExpertServiceClient(conn)
	_, err = client.ListExperts(ctx, &expertsv1.ListExpertsRequest{PageSize: 10})
	code := status.Code(err)
	if code == codes.DeadlineExceeded || code == codes.Canceled {
		fmt.Fprintf(os.Stderr, "no round trip: %v\n", err)
		os.Exit(2)
	}
	// codes.Code.String() gives "Unimplemented"; print the canonical
	// UPPER_SNAKE_CASE name like the other clients do.
	fmt.Printf("status=%s\n", canonical(code))
}

func canonical(c codes.Code) string {
	names := map[codes.Code]string{
		codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
		codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
		codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
		codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
		codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
		codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
		codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS",
		codes.Unauthenticated: "UNAUTHENTICATED",
	}
	if n, ok := names[c]; ok {
		return n
	}
	return strings.ToUpper(c.String())
}
