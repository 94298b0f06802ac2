// Command follow prints a workspace's new conversations as they are created, across
// server restarts and network failures, each exactly once:
//
//	CORTEX_EMAIL=… CORTEX_PASSWORD=… go run ./examples/follow HOST:PORT [UNTIL_TITLE]
//
// It signs in, follows SubscribeEvents for conversation_created events in the user's
// first workspace with a cortexclient.Subscription, and prints one line per event:
//
//	event sequence=<n> title=<title> reconnects=<streams reopened so far>
//
// With UNTIL_TITLE it exits 0 after the event of a conversation of that title.
// tests/e2e/test_go_follow.py restarts the server under it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cortexcore/cortex-core/clients/go/cortexclient"
	eventsv1 "github.com/cortexcore/cortex-core/generated/go/cortex/events/v1"
	sessionsv1 "github.com/cortexcore/cortex-core/generated/go/cortex/sessions/v1"
	"google.golang.org/grpc"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: follow HOST:PORT [UNTIL_TITLE] (CORTEX_EMAIL, CORTEX_PASSWORD)")
		os.Exit(2)
	}
	until := ""
	if len(os.Args) > 2 {
		until = os.Args[2]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := follow(ctx, os.Args[1], until); err != nil {
		fmt.Fprintln(os.Stderr, "follow:", err)
		os.Exit(1)
	}
}

func follow(ctx context.Context, address, until string) error {
	source := cortexclient.NewTokenSource(cortexclient.Tokens{})
	source.AllowInsecure = true
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := cortexclient.Dial(dialCtx, address, source, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := source.Login(ctx, os.Getenv("CORTEX_EMAIL"), os.Getenv("CORTEX_PASSWORD")); err != nil {
		return err
	}
	listed, err := sessionsv1.NewWorkspaceServiceClient(conn).ListWorkspaces(ctx, &sessionsv1.ListWorkspacesRequest{})
	if err != nil {
		return cortexclient.FromError(err)
	}
	subscription := cortexclient.Subscribe(conn, &eventsv1.SubscribeEventsRequest{
		Workspaces: []string{listed.GetWorkspaces()[0].GetName()},
		EventTypes: []eventsv1.EventType{eventsv1.EventType_EVENT_TYPE_CONVERSATION_CREATED},
	})
	// Reconnect for as long as it takes a server to come back, quickly at first.
	subscription.Backoff = cortexclient.Backoff{Initial: 50 * time.Millisecond, Max: time.Second, MaxAttempts: -1}
	defer subscription.Close()
	for {
		event, err := subscription.Next(ctx)
		if err != nil {
			return err
		}
		title := event.GetConversationCreated().GetConversation().GetTitle()
		fmt.Printf("event sequence=%d title=%s reconnects=%d\n", event.GetSequence(), title, subscription.Reconnects)
		if until != "" && title == until {
			return nil
		}
	}
}
