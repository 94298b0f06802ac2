// Package cortexclient holds the helpers every Go caller of Cortex Core otherwise writes,
// over the generated stubs in github.com/cortexcore/cortex-core/generated/go:
//
//   - TokenSource: grpc.PerRPCCredentials that attach the signed-in user's access token
//     and refresh it with the rotating refresh token (before it expires, and once after a
//     call fails UNAUTHENTICATED with reason TOKEN_EXPIRED or TOKEN_INVALID), single-flight.
//   - Error / FromError: a failed call's code with its google.rpc.ErrorInfo reason and
//     metadata, BadRequest field violations and RetryInfo delay, from status.Details().
//   - Subscription: SubscribeEvents that reconnects from its resume token with backoff
//     (honouring RetryInfo) and returns each event once; WatchTask resumes by
//     after_sequence.
package cortexclient
