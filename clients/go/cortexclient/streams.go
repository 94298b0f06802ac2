package cortexclient

import (
	"context"
	"io"
	"strconv"
	"time"

	eventsv1 "github.com/cortexcore/cortex-core/generated/go/cortex/events/v1"
	expertsv1 "github.com/cortexcore/cortex-core/generated/go/cortex/experts/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Subscription is a SubscribeEvents stream that survives reconnects: Next returns each
// matching event once, reopening the stream from the last resume token after a failure
// that reconnecting can cure (retryable: a transport failure such as a stream a proxy
// reset, or the server's UNAVAILABLE, stream cap or expired token; with Backoff, at least the server's RetryInfo delay).
// Heartbeats advance ResumeToken and are never returned. Not safe for concurrent Next.
type Subscription struct {
	// Request holds the filters; its ResumeToken is where the next (re)open starts.
	Request *eventsv1.SubscribeEventsRequest
	Backoff Backoff
	// OnGap hears of each ReplayUnavailable frame (events the server no longer has).
	OnGap func(*eventsv1.ReplayUnavailable)
	// Reconnects counts the streams reopened.
	Reconnects int

	client eventsv1.EventServiceClient
	stream eventsv1.EventService_SubscribeEventsClient
	cancel context.CancelFunc
	last   map[string]int64 // last sequence returned, per log (workspace)
}

// Subscribe prepares a Subscription; the stream opens on the first Next.
func Subscribe(conn grpc.ClientConnInterface, request *eventsv1.SubscribeEventsRequest) *Subscription {
	if request == nil {
		request = &eventsv1.SubscribeEventsRequest{}
	}
	return &Subscription{Request: request, client: eventsv1.NewEventServiceClient(conn), last: map[string]int64{}}
}

// ResumeToken is the point after the last event or heartbeat received; persist it to
// continue later (Request.ResumeToken).
func (s *Subscription) ResumeToken() string { return s.Request.GetResumeToken() }

// Next blocks until the next event, ctx's end, or a failure reconnecting cannot cure
// (returned as *Error).
func (s *Subscription) Next(ctx context.Context) (*eventsv1.Event, error) {
	for {
		if s.stream == nil {
			streamCtx, cancel := context.WithCancel(ctx)
			stream, err := s.client.SubscribeEvents(streamCtx, s.Request)
			if err != nil {
				cancel()
				if werr := s.wait(ctx, err, nil); werr != nil {
					return nil, werr
				}
				continue
			}
			s.stream, s.cancel = stream, cancel
		}
		frame, err := s.stream.Recv()
		if err != nil {
			trailer := s.stream.Trailer()
			s.Close()
			if werr := s.wait(ctx, err, trailer); werr != nil {
				return nil, werr
			}
			continue
		}
		s.Backoff.reset()
		switch f := frame.GetFrame().(type) {
		case *eventsv1.SubscribeEventsResponse_Heartbeat:
			if token := f.Heartbeat.GetResumeToken(); token != "" {
				s.Request.ResumeToken = token
			}
		case *eventsv1.SubscribeEventsResponse_ReplayUnavailable:
			gap := f.ReplayUnavailable
			// A log that restarted (an in-memory log after a server restart) numbers from
			// its oldest event again: take those, they are new.
			if oldest := gap.GetOldestAvailableSequence() - 1; oldest < s.last[gap.GetWorkspace()] {
				s.last[gap.GetWorkspace()] = oldest
			}
			if s.OnGap != nil {
				s.OnGap(gap)
			}
		case *eventsv1.SubscribeEventsResponse_Event:
			event := f.Event
			if event.GetSequence() <= s.last[event.GetWorkspace()] {
				continue // delivered before a reconnect
			}
			s.last[event.GetWorkspace()] = event.GetSequence()
			if token := event.GetResumeToken(); token != "" {
				s.Request.ResumeToken = token
			}
			return event, nil
		}
	}
}

// wait takes the resume point from a failure and sleeps before reconnecting, or
// returns the error when reconnecting cannot help.
func (s *Subscription) wait(ctx context.Context, err error, trailer metadata.MD) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var typed *Error
	if err != io.EOF { // the stream never ends OK on its own; reconnect if it does
		typed = FromError(err)
		if token := typed.Metadata["resume_token"]; token != "" {
			s.Request.ResumeToken = token
		} else if values := trailer.Get("cortex-resume-token"); len(values) > 0 && values[0] != "" {
			s.Request.ResumeToken = values[0]
		}
		if !retryable(typed) {
			return typed
		}
	}
	delay, ok := s.Backoff.next(typed)
	if !ok {
		if typed != nil {
			return typed
		}
		return io.ErrUnexpectedEOF
	}
	s.Reconnects++
	return sleep(ctx, delay)
}

// Close ends the current stream (Next reopens it).
func (s *Subscription) Close() {
	if s.cancel != nil {
		s.cancel()
	}
	s.stream, s.cancel = nil, nil
}

// WatchTask calls handle with each frame of ExpertService.WatchTask(name) once
// (heartbeats aside) until the task is terminal, reconnecting with the last sequence
// seen as after_sequence. It returns nil after the terminal frame, handle's error,
// ctx's error or a failure reconnecting cannot cure (*Error).
func WatchTask(ctx context.Context, conn grpc.ClientConnInterface, name string, afterSequence int64, backoff Backoff,
	handle func(*expertsv1.WatchTaskResponse) error) error {
	client := expertsv1.NewExpertServiceClient(conn)
	last := afterSequence
	for {
		err := watchOnce(ctx, client, name, &last, &backoff, handle)
		if err == nil {
			return nil
		}
		if handled, ok := err.(handlerError); ok {
			return handled.err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		typed := FromError(err)
		if resume, perr := strconv.ParseInt(typed.Metadata["after_sequence"], 10, 64); perr == nil && resume > last {
			last = resume
		}
		if !retryable(typed) {
			return typed
		}
		delay, ok := backoff.next(typed)
		if !ok {
			return typed
		}
		if serr := sleep(ctx, delay); serr != nil {
			return serr
		}
	}
}

// handlerError carries handle's own error out of watchOnce untouched.
type handlerError struct{ err error }

func (h handlerError) Error() string { return h.err.Error() }

func watchOnce(ctx context.Context, client expertsv1.ExpertServiceClient, name string, last *int64, backoff *Backoff,
	handle func(*expertsv1.WatchTaskResponse) error) error {
	streamCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.WatchTask(streamCtx, &expertsv1.WatchTaskRequest{Name: name, AfterSequence: *last})
	if err != nil {
		return err
	}
	for {
		frame, err := stream.Recv()
		if err == io.EOF {
			return nil // closed with OK after the terminal frame
		}
		if err != nil {
			return err
		}
		backoff.reset()
		if _, beat := frame.GetFrame().(*expertsv1.WatchTaskResponse_Heartbeat); beat {
			continue
		}
		if frame.GetSequence() != 0 && frame.GetSequence() <= *last {
			continue
		}
		if frame.GetSequence() > *last {
			*last = frame.GetSequence()
		}
		if herr := handle(frame); herr != nil {
			return handlerError{herr}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
