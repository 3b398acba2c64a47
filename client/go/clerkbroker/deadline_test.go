// The default deadline, exactly: what the interceptor gives a call.

package clerkbroker

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/example/clerk-broker/client/go/clerkbrokerv1"
)

// deadlineOf is the deadline the interceptor hands on for req under ctx
// (zero: none).
func deadlineOf(t *testing.T, c *Client, ctx context.Context, req interface{}) time.Time {
	t.Helper()
	var got time.Time
	invoker := func(ctx context.Context, _ string, _, _ interface{}, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		got, _ = ctx.Deadline()
		return nil
	}
	if err := c.defaultDeadline(ctx, "/m", req, nil, nil, invoker); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestTheDefaultDeadlineAppliesOnlyWithoutOneAndMakesRoomForMaxWait(t *testing.T) {
	c := &Client{timeout: 2 * time.Second}
	near := func(got time.Time, want time.Duration) bool {
		left := time.Until(got)
		return left <= want && left > want-time.Second
	}

	if got := deadlineOf(t, c, context.Background(), &pb.GetUserRequest{}); !near(got, 2*time.Second) {
		t.Fatalf("a call without a deadline: %v left, want the client's 2s", time.Until(got))
	}
	permit := &pb.AcquirePermitRequest{MaxWait: durationpb.New(30 * time.Second)}
	if got := deadlineOf(t, c, context.Background(), permit); !near(got, 32*time.Second) {
		t.Fatalf("a permit that may wait 30s: %v left, want 32s", time.Until(got))
	}
	if got := deadlineOf(t, c, context.Background(), &pb.AcquirePermitRequest{}); !near(got, 2*time.Second) {
		t.Fatalf("a permit that does not wait: %v left, want 2s", time.Until(got))
	}

	longer, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	want, _ := longer.Deadline()
	if got := deadlineOf(t, c, longer, &pb.GetUserRequest{}); !got.Equal(want) {
		t.Fatalf("the context's deadline was replaced: %v, want %v", got, want)
	}
}
