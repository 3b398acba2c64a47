// Permits: one AcquirePermit call, and a permit that waits — in the
// broker's fair queue first, then by retry_after while the wait allows.

package clerkbroker

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/example/clerk-broker/client/go/clerkbrokerv1"
)

// minPermitPause is the shortest pause between two asks: a refusal with a
// zero retry_after must not turn into a busy loop.
const minPermitPause = 10 * time.Millisecond

// PermitRequest asks for permission to spend upstream requests.
type PermitRequest struct {
	// Budget to draw on; "" is the upstream Clerk budget.
	Budget string
	// Cost is the number of upstream requests about to be made; 0 means 1.
	Cost uint32
	// Wait is how long AcquirePermit may wait for the permit (never longer
	// than the context allows); 0 grants only if the budget has room now.
	Wait time.Duration
	// Bulk marks background work (exports, backfills): it gets the bulk
	// share of the budget and yields to interactive callers.
	Bulk bool
}

// TryAcquirePermit is one AcquirePermit call: a refusal is Granted false
// with RetryAfter, not an error. Without a context deadline the call gets
// the client's timeout plus the request's max_wait.
func (c *Client) TryAcquirePermit(ctx context.Context, request *pb.AcquirePermitRequest) (*pb.AcquirePermitResponse, error) {
	return c.quota.AcquirePermit(ctx, request)
}

// AcquirePermit returns a granted permit for request.Cost requests of
// request.Budget, waiting up to request.Wait: in the broker's fair queue
// first, then, if refused, retry_after at a time while the wait allows.
// When it cannot, the error is a *PermitRefusedError (RetryAfter gives the
// broker's estimate); an unknown budget is NOT_FOUND (IsNotFound).
func (c *Client) AcquirePermit(ctx context.Context, request PermitRequest) (*pb.AcquirePermitResponse, error) {
	deadline := time.Now().Add(request.Wait)
	if until, ok := ctx.Deadline(); ok && until.Before(deadline) {
		deadline = until
	}
	priority := pb.Priority_PRIORITY_INTERACTIVE
	if request.Bulk {
		priority = pb.Priority_PRIORITY_BULK
	}
	for {
		ask := &pb.AcquirePermitRequest{Budget: request.Budget, Cost: request.Cost, Priority: priority}
		if remaining := time.Until(deadline); remaining > 0 {
			ask.MaxWait = durationpb.New(remaining)
		}
		answer, err := c.TryAcquirePermit(ctx, ask)
		if err != nil {
			return nil, err
		}
		if answer.GetGranted() {
			return answer, nil
		}
		delay := answer.GetRetryAfter().AsDuration()
		pause := delay
		if pause < minPermitPause {
			pause = minPermitPause
		}
		if time.Now().Add(pause).After(deadline) {
			budget := answer.GetBudget()
			if budget == "" {
				budget = request.Budget
			}
			return nil, &PermitRefusedError{Budget: budget, RetryAfter: delay}
		}
		if err := sleep(ctx, pause); err != nil {
			return nil, err
		}
	}
}

// sleep waits for d, or returns the context's error if it ends first.
func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
