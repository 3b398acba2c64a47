// Exports: ListUsers as an iterator of messages (Export) or of users
// (Users) that resumes from the last resume token after UNAVAILABLE — a
// broken connection, a draining broker, Clerk down — so that every user
// arrives once.

package clerkbroker

import (
	"context"
	"errors"
	"io"
	"math/rand"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/example/clerk-broker/client/go/clerkbrokerv1"
)

// resumeTokenTrailer is the trailer in which a broker that ends an export
// early (draining, deadline) repeats the last token it sent.
const resumeTokenTrailer = "x-resume-token"

// ResumePolicy says how an export retries after UNAVAILABLE or a broken
// connection: up to Retries failures in a row (a message received resets
// the count), waiting Backoff doubled at each failure up to MaxBackoff,
// jittered between half and all of it.
type ResumePolicy struct {
	// Retries is how many failures in a row an export survives; 0 never
	// resumes.
	Retries int
	// Backoff is the pause after the first failure.
	Backoff time.Duration
	// MaxBackoff caps the pause.
	MaxBackoff time.Duration
}

// DefaultResumePolicy is 6 failures in a row, 100 ms doubling to 5 s: about
// 8 s of outage, as the Rust, Python and Node clients.
func DefaultResumePolicy() ResumePolicy {
	return ResumePolicy{Retries: 6, Backoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}
}

// pause is the jittered wait before resuming after the failure-th failure
// in a row (from 1).
func (p ResumePolicy) pause(failure int, random *rand.Rand) time.Duration {
	backoff := p.Backoff
	for i := 1; i < failure && backoff < p.MaxBackoff; i++ {
		backoff *= 2
	}
	if backoff > p.MaxBackoff {
		backoff = p.MaxBackoff
	}
	if backoff <= 0 {
		return 0
	}
	return backoff/2 + time.Duration(random.Int63n(int64(backoff/2)+1))
}

// Export is a ListUsers export, message by message:
//
//	export := broker.Export(ctx, &pb.ListUsersRequest{OrderBy: "+created_at"})
//	defer export.Close()
//	for export.Next() {
//		save(export.Message().Users, export.Message().ResumeToken)
//	}
//	if err := export.Err(); err != nil { ... }
//
// It has no deadline (cancel ctx to stop it); HTTP/2 keep-alive pings find
// a dead connection. Not safe for concurrent use.
type Export struct {
	client  *Client
	ctx     context.Context
	request *pb.ListUsersRequest
	// stream is the call in progress, nil between calls.
	stream pb.UserService_ListUsersClient
	cancel context.CancelFunc
	// token is the last resume token received ("" before the first).
	token     string
	delivered uint64
	failures  int
	resumes   int
	message   *pb.ListUsersResponse
	err       error
	done      bool
	random    *rand.Rand
}

// Export starts a ListUsers export (the call is made by the first Next).
// request is not modified. To continue a saved export, set only
// ResumeToken (and PageSize, MaxUsers): the token carries the filter and
// order.
func (c *Client) Export(ctx context.Context, request *pb.ListUsersRequest) *Export {
	if request == nil {
		request = &pb.ListUsersRequest{}
	}
	return &Export{
		client:  c,
		ctx:     ctx,
		request: proto.Clone(request).(*pb.ListUsersRequest),
		token:   request.GetResumeToken(),
		random:  rand.New(rand.NewSource(time.Now().UnixNano())),
	}
}

// Next receives the next message; false when the export is complete or
// failed (see Err).
func (e *Export) Next() bool {
	for !e.done {
		if limit := e.request.GetMaxUsers(); limit > 0 && e.delivered >= limit {
			e.finish(nil)
			break
		}
		if e.stream == nil {
			e.open()
		}
		message, err := e.stream.Recv()
		if err == nil {
			e.failures = 0
			e.delivered += uint64(len(message.GetUsers()))
			if message.GetResumeToken() != "" {
				e.token = message.GetResumeToken()
			}
			e.message = message
			return true
		}
		if tokens := e.stream.Trailer().Get(resumeTokenTrailer); len(tokens) > 0 && tokens[0] != "" {
			e.token = tokens[0]
		}
		e.closeStream()
		if errors.Is(err, io.EOF) {
			e.finish(nil)
			break
		}
		if status.Code(err) != codes.Unavailable || e.failures >= e.client.resume.Retries {
			e.finish(wrap("ListUsers", err))
			break
		}
		e.failures++
		if err := sleep(e.ctx, e.client.resume.pause(e.failures, e.random)); err != nil {
			e.finish(wrap("ListUsers", status.FromContextError(err).Err()))
			break
		}
		e.resumes++
	}
	e.message = nil
	return false
}

// open starts a ListUsers call: the original request, or, once a token
// is known, a resumed one for what remains.
func (e *Export) open() {
	request := e.request
	if e.token != "" {
		request = &pb.ListUsersRequest{ResumeToken: e.token, PageSize: e.request.GetPageSize()}
		if limit := e.request.GetMaxUsers(); limit > 0 {
			request.MaxUsers = limit - e.delivered
		}
	}
	ctx, cancel := context.WithCancel(e.ctx)
	stream, err := e.client.users.ListUsers(ctx, request)
	if err != nil {
		stream = failedStream{err: err}
	}
	e.stream, e.cancel = stream, cancel
}

// closeStream ends the call in progress, if any.
func (e *Export) closeStream() {
	if e.cancel != nil {
		e.cancel()
	}
	e.stream, e.cancel = nil, nil
}

// finish ends the export with err (nil: complete).
func (e *Export) finish(err error) {
	e.closeStream()
	e.err, e.done = err, true
}

// Message is the message the last Next received.
func (e *Export) Message() *pb.ListUsersResponse { return e.message }

// ResumeToken is the last resume token received: save it to continue the
// export later, even after Err (a draining broker's trailer counts too).
func (e *Export) ResumeToken() string { return e.token }

// Resumes is how many times the export continued from its token after a
// failure.
func (e *Export) Resumes() int { return e.resumes }

// Err is why the export stopped early; nil once it is complete. An *Error
// (status.Code works on it), or the context's end.
func (e *Export) Err() error { return e.err }

// Close stops the export; Next then returns false. Calling it after the
// export ended is harmless.
func (e *Export) Close() {
	if !e.done {
		e.finish(nil)
	}
}

// Users iterates over the users of an export one at a time (see Export).
type Users struct {
	export *Export
	page   []*pb.User
	user   *pb.User
}

// ListUsers is an export that yields users one at a time:
//
//	users := broker.ListUsers(ctx, &pb.ListUsersRequest{Filter: filter})
//	defer users.Close()
//	for users.Next() {
//		fmt.Println(users.User().Id)
//	}
//	if err := users.Err(); err != nil { ... }
func (c *Client) ListUsers(ctx context.Context, request *pb.ListUsersRequest) *Users {
	return &Users{export: c.Export(ctx, request)}
}

// Next moves to the next user; false when there is none (see Err).
func (u *Users) Next() bool {
	for len(u.page) == 0 {
		if !u.export.Next() {
			u.user = nil
			return false
		}
		u.page = u.export.Message().GetUsers()
	}
	u.user, u.page = u.page[0], u.page[1:]
	return true
}

// User is the user the last Next moved to.
func (u *Users) User() *pb.User { return u.user }

// Err is why the export stopped early; nil once it is complete.
func (u *Users) Err() error { return u.export.Err() }

// Resumes is how many times the export continued after a failure.
func (u *Users) Resumes() int { return u.export.Resumes() }

// Close stops the export.
func (u *Users) Close() { u.export.Close() }

// failedStream stands for a call that could not even start: its first
// Recv returns why, so that Next treats it as any other failure.
type failedStream struct {
	pb.UserService_ListUsersClient
	err error
}

func (f failedStream) Recv() (*pb.ListUsersResponse, error) { return nil, f.err }
func (f failedStream) Trailer() metadata.MD                 { return nil }
