// Permits and deadlines: granted at once, NOT_FOUND for an unknown budget,
// and a budget taken whole: RESOURCE_EXHAUSTED with RetryInfo within the
// default deadline, refusals with retry_after, and waits that the deadline
// allows (the context's, or the client's plus max_wait).

package clerkbroker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/example/clerk-broker/client/go/clerkbroker"
	pb "github.com/example/clerk-broker/client/go/clerkbrokerv1"
	"github.com/example/clerk-broker/client/go/internal/brokertest"
)

func TestAPermitOnTheUpstreamBudgetIsGranted(t *testing.T) {
	client := connect(t, demo.Address)
	answer, err := client.AcquirePermit(testContext(t), clerkbroker.PermitRequest{Cost: 2, Wait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !answer.GetGranted() || answer.GetBudget() != "clerk" || answer.GetLimit() != brokertest.BudgetLimit ||
		answer.GetWindow().AsDuration() != brokertest.BudgetWindow {
		t.Fatalf("answer %v", answer)
	}
}

func TestAnUnknownBudgetIsNotFound(t *testing.T) {
	client := connect(t, demo.Address)
	_, err := client.AcquirePermit(testContext(t), clerkbroker.PermitRequest{Budget: "no-such-budget"})
	if !clerkbroker.IsNotFound(err) {
		t.Fatalf("want NOT_FOUND, got %v", err)
	}
}

func TestAFullBudgetRefusesWithinTheDeadlineAndGrantsWithinItsWindow(t *testing.T) {
	short := connect(t, demo.Address, clerkbroker.WithTimeout(300*time.Millisecond))
	ctx := context.Background() // no deadline: the client's default applies

	// max_wait 5 s on a 300 ms default: the deadline must make room for it.
	everything, err := short.TryAcquirePermit(ctx, &pb.AcquirePermitRequest{
		Cost: brokertest.BudgetLimit, MaxWait: durationpb.New(5 * time.Second),
	})
	if err != nil || !everything.GetGranted() {
		t.Fatalf("the whole budget: %v, %v", everything, err)
	}

	// A fresh id is never cached: the lookup needs the budget, which has
	// no room within 300 ms, and the broker says so at once.
	started := time.Now()
	_, err = short.GetUser(ctx, fmt.Sprintf("user_exhausted%d", time.Now().UnixNano()))
	elapsed := time.Since(started)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("want RESOURCE_EXHAUSTED, got %v", err)
	}
	delay, ok := clerkbroker.RetryAfter(err)
	if !ok || delay <= 300*time.Millisecond || delay > 1100*time.Millisecond {
		t.Fatalf("RetryInfo %v (%v)", delay, ok)
	}
	if elapsed > 800*time.Millisecond {
		t.Fatalf("the refusal took %v", elapsed)
	}
	if !strings.Contains(err.Error(), "retry after") {
		t.Fatalf("the message says what to do: %q", err)
	}

	refused, err := short.TryAcquirePermit(ctx, &pb.AcquirePermitRequest{Cost: 1})
	if err != nil || refused.GetGranted() || refused.GetRetryAfter().AsDuration() <= 0 {
		t.Fatalf("want a refusal with retry_after, got %v, %v", refused, err)
	}
	_, err = short.AcquirePermit(ctx, clerkbroker.PermitRequest{Wait: 50 * time.Millisecond})
	var permitRefused *clerkbroker.PermitRefusedError
	if !errors.As(err, &permitRefused) || permitRefused.Budget != "clerk" {
		t.Fatalf("want a PermitRefusedError on clerk, got %v", err)
	}
	if delay, ok := clerkbroker.RetryAfter(err); !ok || delay <= 0 {
		t.Fatalf("retry after %v (%v)", delay, ok)
	}

	// One call may wait as long as its max_wait: the client's 300 ms
	// deadline is extended by it, so the broker holds the call until the
	// budget frees (within its 1 s window) instead of refusing it.
	waited, err := short.TryAcquirePermit(ctx, &pb.AcquirePermitRequest{Cost: 1, MaxWait: durationpb.New(3 * time.Second)})
	if err != nil || !waited.GetGranted() {
		t.Fatalf("want a permit after waiting in the queue, got %v, %v", waited, err)
	}

	// Take what is left, then look up a fresh id with a context deadline:
	// that deadline, not the client's 300 ms, bounds the call, which waits
	// for the budget to free and then gets Clerk's answer.
	rest, err := short.TryAcquirePermit(ctx, &pb.AcquirePermitRequest{Cost: brokertest.BudgetLimit - 1})
	if err != nil || !rest.GetGranted() {
		t.Fatalf("the rest of the budget: %v, %v", rest, err)
	}
	waiting, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	started = time.Now()
	_, err = short.GetUser(waiting, fmt.Sprintf("user_waited%d", time.Now().UnixNano()))
	if !clerkbroker.IsNotFound(err) || time.Since(started) < 300*time.Millisecond {
		t.Fatalf("want NOT_FOUND after waiting for the budget, got %v after %v", err, time.Since(started))
	}
}
