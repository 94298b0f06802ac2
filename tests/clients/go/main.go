// Command go-client proves the generated Go stubs make real, authenticated
// gRPC round trips to Cortex Core:
//
//  1. cortex.auth.v1.AuthService/GetCurrentUser without a token, printing
//     `anonymous=<CODE_NAME>` (UNAUTHENTICATED expected);
//  2. AuthService/Register with the given email;
//  3. AuthService/GetCurrentUser with `authorization: Bearer <access token>`,
//     printing `email=<user.email>`;
//  4. cortex.sessions.v1.WorkspaceService/ListWorkspaces with the same token,
//     printing `workspaces=<count>` and `role=<caller_role of the first>`.
//
// Usage: go-client HOST:PORT EMAIL
//
// Exit status: 0 when every call succeeded, 1 on usage errors, 2 when no
// round trip happened (connection refused, deadline exceeded before any
// answer), 3 when an RPC failed (after printing `status=<CODE_NAME>`).
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	authv1 "github.com/cortexcore/cortex-core/generated/go/cortex/auth/v1"
	sessionsv1 "github.com/cortexcore/cortex-core/generated/go/cortex/sessions/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	password    = "correct horse battery staple 42"
	displayName = "Go Client"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: go-client HOST:PORT EMAIL")
		os.Exit(1)
	}
	address, email := os.Args[1], os.Args[2]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	dialCtx, dialCancel := context.WithTimeout(ctx, 10*time.Second)
	defer dialCancel()
	conn, err := grpc.DialContext(dialCtx, address, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fmt.Fprintf(os.Stderr, "dial %s: %v\n", address, err)
		os.Exit(2)
	}
	defer conn.Close()

	auth := authv1.NewAuthServiceClient(conn)
	workspaces := sessionsv1.NewWorkspaceServiceClient(conn)

	_, err = auth.GetCurrentUser(ctx, &authv1.GetCurrentUserRequest{})
	fmt.Printf("anonymous=%s\n", canonical(roundTrip(err)))

	registered, err := auth.Register(ctx, &authv1.RegisterRequest{
		Email: email, Password: password, DisplayName: displayName,
	})
	check("Register", err)

	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+registered.GetAccessToken())

	current, err := auth.GetCurrentUser(authed, &authv1.GetCurrentUserRequest{})
	check("GetCurrentUser", err)
	fmt.Printf("email=%s\n", current.GetUser().GetEmail())

	listed, err := workspaces.ListWorkspaces(authed, &sessionsv1.ListWorkspacesRequest{PageSize: 10})
	check("ListWorkspaces", err)
	fmt.Printf("workspaces=%d\n", len(listed.GetWorkspaces()))
	if len(listed.GetWorkspaces()) > 0 {
		// The generated String() is the proto enum value name.
		fmt.Printf("role=%s\n", listed.GetWorkspaces()[0].GetCallerRole().String())
	}
}

// roundTrip returns err's gRPC code, exiting 2 when the server never answered.
func roundTrip(err error) codes.Code {
	code := status.Code(err)
	if code == codes.DeadlineExceeded || code == codes.Canceled {
		fmt.Fprintf(os.Stderr, "no round trip: %v\n", err)
		os.Exit(2)
	}
	return code
}

// check prints `status=<CODE_NAME>` and exits 3 when an RPC failed.
func check(method string, err error) {
	if err == nil {
		return
	}
	code := roundTrip(err)
	fmt.Printf("status=%s\n", canonical(code))
	fmt.Fprintf(os.Stderr, "%s: %v\n", method, err)
	os.Exit(3)
}

// canonical gives the UPPER_SNAKE_CASE code name the other clients print;
// codes.Code.String() gives "Unauthenticated".
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
