// Command quickstart tours cortexclient against a running server (make run):
//
//	go run ./examples/quickstart [HOST:PORT]   (default 127.0.0.1:50051)
//
// It signs up (Register), then resumes the sign-in in a second TokenSource from the
// stored refresh token alone (five concurrent calls share one RefreshToken, and five
// calls refused with a rejected token share one more); reads an
// error's details (a workspace without a display name: INVALID_ARGUMENT with a BadRequest
// violation on workspace.display_name); streams a reply (SendMessage) and cancels it
// after its first text; follows the event stream, stops, and resumes from the saved
// resume token (the next event is the one right after the last seen); and runs a task on
// the experts/echo expert, watching it to its end.
//
// Each step prints key=value lines; tests/e2e/test_client_examples.py runs it in CI.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cortexcore/cortex-core/clients/go/cortexclient"
	contextv1 "github.com/cortexcore/cortex-core/generated/go/cortex/context/v1"
	eventsv1 "github.com/cortexcore/cortex-core/generated/go/cortex/events/v1"
	expertsv1 "github.com/cortexcore/cortex-core/generated/go/cortex/experts/v1"
	sessionsv1 "github.com/cortexcore/cortex-core/generated/go/cortex/sessions/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

const password = "correct horse battery staple 42"

func main() {
	address := "127.0.0.1:50051"
	if len(os.Args) > 1 {
		address = os.Args[1]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := run(ctx, address); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func dial(ctx context.Context, address string, source *cortexclient.TokenSource) (*grpc.ClientConn, error) {
	source.AllowInsecure = true // plaintext to a local server; use TLS credentials otherwise
	return cortexclient.Dial(ctx, address, source, grpc.WithInsecure(), grpc.WithBlock())
}

func run(ctx context.Context, address string) error {
	email := fmt.Sprintf("quickstart-go-%d@example.com", time.Now().UnixNano())
	first := cortexclient.NewTokenSource(cortexclient.Tokens{})
	conn, err := dial(ctx, address, first)
	if err != nil {
		return err
	}
	if _, err := first.Register(ctx, email, password, "Quickstart Go"); err != nil {
		return err
	}
	conn.Close()
	fmt.Printf("registered=%s\n", email)

	// 1. A new process that kept only the refresh token.
	stored := first.Tokens()
	source := cortexclient.NewTokenSource(cortexclient.Tokens{RefreshToken: stored.RefreshToken, Session: stored.Session})
	conn, err = dial(ctx, address, source)
	if err != nil {
		return err
	}
	defer conn.Close()
	workspaces := sessionsv1.NewWorkspaceServiceClient(conn)
	var wg sync.WaitGroup
	listed := make([]*sessionsv1.ListWorkspacesResponse, 5)
	errs := make([]error, 5)
	for i := range listed {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			listed[i], errs[i] = workspaces.ListWorkspaces(ctx, &sessionsv1.ListWorkspacesRequest{})
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return cortexclient.FromError(err)
		}
	}
	fmt.Printf("refreshes=%d\n", source.Refreshes())
	fmt.Printf("workspaces=%d\n", len(listed[0].GetWorkspaces()))
	workspace := listed[0].GetWorkspaces()[0].GetName()

	// A token the server refuses though it has not expired (say, signed with a rotated
	// key): the calls that saw it share one refresh and are repeated.
	current := source.Tokens()
	source.SetTokens(cortexclient.Tokens{AccessToken: "not-a-token", RefreshToken: current.RefreshToken, AccessExpiry: time.Now().Add(time.Hour)})
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = workspaces.ListWorkspaces(ctx, &sessionsv1.ListWorkspacesRequest{})
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return cortexclient.FromError(err)
		}
	}
	fmt.Printf("refreshes_after_rejection=%d\n", source.Refreshes())

	// 2. Error details.
	_, err = workspaces.CreateWorkspace(ctx, &sessionsv1.CreateWorkspaceRequest{Workspace: &sessionsv1.Workspace{}})
	if failure := cortexclient.FromError(err); failure != nil && failure.Code == codes.InvalidArgument {
		fmt.Printf("error_code=%s\n", failure.Code)
		fmt.Printf("error_reason=%s\n", failure.Reason)
		fmt.Printf("error_field=%s\n", failure.Violations[0].Field)
	} else {
		return fmt.Errorf("CreateWorkspace without a name: %v", err)
	}

	// 3. Stream a reply and cancel it.
	chats := contextv1.NewConversationServiceClient(conn)
	created, err := chats.CreateConversation(ctx, &contextv1.CreateConversationRequest{
		Parent: workspace, Conversation: &contextv1.Conversation{Title: "quickstart"},
	})
	if err != nil {
		return cortexclient.FromError(err)
	}
	replyCtx, stopReply := context.WithCancel(ctx)
	reply, err := chats.SendMessage(replyCtx, &contextv1.SendMessageRequest{
		Conversation: created.GetConversation().GetName(), Content: "Tell me a long story.",
		IdempotencyKey: fmt.Sprintf("quickstart-%d", time.Now().UnixNano()),
	})
	if err != nil {
		stopReply()
		return cortexclient.FromError(err)
	}
	for {
		frame, err := reply.Recv()
		if err != nil {
			stopReply()
			return cortexclient.FromError(err)
		}
		if frame.GetDelta() != nil {
			fmt.Println("reply_started=true")
			stopReply()
			break
		}
	}
	for err == nil { // frames already on their way may still arrive before the cancellation
		_, err = reply.Recv()
	}
	fmt.Printf("reply_cancelled=%t\n", status.Code(err) == codes.Canceled)

	// 4. Events, resumed from the saved token.
	if err := resumeEvents(ctx, conn, chats, workspace); err != nil {
		return err
	}

	// 5. A task, watched to its end.
	tasks := expertsv1.NewExpertServiceClient(conn)
	input, _ := structpb.NewStruct(map[string]interface{}{"text": "hi"})
	task, err := tasks.CreateTask(ctx, &expertsv1.CreateTaskRequest{
		Parent: workspace, Task: &expertsv1.Task{Expert: "experts/echo", Input: input},
	})
	if err != nil {
		return cortexclient.FromError(err)
	}
	// A stream refused at open (the same rejected token) is reopened after one refresh.
	current = source.Tokens()
	source.SetTokens(cortexclient.Tokens{AccessToken: "not-a-token", RefreshToken: current.RefreshToken, AccessExpiry: time.Now().Add(time.Hour)})
	var last *expertsv1.Task
	err = cortexclient.WatchTask(ctx, conn, task.GetTask().GetName(), 0, cortexclient.Backoff{},
		func(frame *expertsv1.WatchTaskResponse) error {
			if t := frame.GetTask(); t != nil {
				last = t
			}
			return nil
		})
	if err != nil {
		return err
	}
	if last == nil {
		return errors.New("WatchTask sent no task snapshot")
	}
	fmt.Printf("task_state=%s\n", last.GetState())
	fmt.Printf("refreshes_after_stream_rejection=%d\n", source.Refreshes())
	return nil
}

func resumeEvents(ctx context.Context, conn *grpc.ClientConn, chats contextv1.ConversationServiceClient, workspace string) error {
	subscription := cortexclient.Subscribe(conn, &eventsv1.SubscribeEventsRequest{Workspaces: []string{workspace}})
	type result struct {
		event *eventsv1.Event
		err   error
	}
	first := make(chan result, 1)
	go func() {
		event, err := subscription.Next(ctx)
		first <- result{event, err}
	}()
	probe := func(title string) error {
		_, err := chats.CreateConversation(ctx, &contextv1.CreateConversationRequest{
			Parent: workspace, Conversation: &contextv1.Conversation{Title: title},
		})
		if err != nil {
			return cortexclient.FromError(err)
		}
		return nil
	}
	var seen result
	for waiting := true; waiting; {
		// The stream starts live: make events until one arrives.
		if err := probe("probe"); err != nil {
			return err
		}
		select {
		case seen = <-first:
			waiting = false
		case <-time.After(200 * time.Millisecond):
		}
	}
	if seen.err != nil {
		return seen.err
	}
	subscription.Close()
	token := subscription.ResumeToken()
	if err := probe("after"); err != nil {
		return err
	}
	resumed := cortexclient.Subscribe(conn, &eventsv1.SubscribeEventsRequest{Workspaces: []string{workspace}, ResumeToken: token})
	defer resumed.Close()
	following, err := resumed.Next(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("events_resumed_in_order=%t\n", following.GetSequence() == seen.event.GetSequence()+1)
	return nil
}
