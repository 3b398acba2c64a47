// Errors without a broker: the message and hint of each code, and the
// google.rpc details decoded from statuses built here.

package clerkbroker

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// withDetails is a status error of code carrying details.
func withDetails(t *testing.T, code codes.Code, message string, details ...*errdetails.RetryInfo) error {
	t.Helper()
	s := status.New(code, message)
	for _, detail := range details {
		var err error
		if s, err = s.WithDetails(detail); err != nil {
			t.Fatal(err)
		}
	}
	return s.Err()
}

func TestEveryCodeSaysWhatToDo(t *testing.T) {
	cases := []struct {
		code codes.Code
		hint string
	}{
		{codes.NotFound, ""},
		{codes.InvalidArgument, "fix the request"},
		{codes.Unauthenticated, "WithToken"},
		{codes.PermissionDenied, "operator"},
		{codes.ResourceExhausted, "retry later"},
		{codes.OutOfRange, "split"},
		{codes.Unavailable, "retry with backoff"},
		{codes.DeadlineExceeded, "longer deadline"},
		{codes.Internal, "report it"},
		{codes.FailedPrecondition, "page the broker's operator"},
	}
	for _, c := range cases {
		err := wrap("/clerk_broker.v1.UserService/GetUser", status.Error(c.code, "what the broker said"))
		var failed *Error
		if !errors.As(err, &failed) || failed.Method != "GetUser" || status.Code(err) != c.code {
			t.Fatalf("%v: wrapped as %#v", c.code, err)
		}
		want := "clerkbroker: GetUser: " + CodeName(c.code) + ": what the broker said"
		if !strings.HasPrefix(err.Error(), want) || !strings.Contains(failed.Hint(), c.hint) {
			t.Errorf("%v: %q (hint %q), want %q and a hint with %q", c.code, err, failed.Hint(), want, c.hint)
		}
		if (c.hint == "") != (failed.Hint() == "") {
			t.Errorf("%v: hint %q", c.code, failed.Hint())
		}
	}
}

func TestRetryInfoIsDecodedThroughWrapping(t *testing.T) {
	raw := withDetails(t, codes.ResourceExhausted, "budget",
		&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)})
	for _, err := range []error{raw, wrap("GetUser", raw), fmt.Errorf("loading: %w", wrap("GetUser", raw))} {
		if delay, ok := RetryAfter(err); !ok || delay != 1500*time.Millisecond {
			t.Fatalf("%v: retry after %v (%v)", err, delay, ok)
		}
	}
	if !strings.HasSuffix(wrap("GetUser", raw).Error(), "(retry after 1.5s)") {
		t.Fatalf("message %q", wrap("GetUser", raw))
	}
	if _, ok := RetryAfter(withDetails(t, codes.ResourceExhausted, "no details")); ok {
		t.Fatal("no RetryInfo, yet a delay")
	}
	refused := fmt.Errorf("sync: %w", &PermitRefusedError{Budget: "writes", RetryAfter: time.Second})
	if delay, ok := RetryAfter(refused); !ok || delay != time.Second {
		t.Fatalf("refused: retry after %v (%v)", delay, ok)
	}
	if _, ok := RetryAfter(errors.New("not a status")); ok {
		t.Fatal("a plain error has no delay")
	}
}

func TestBadRequestViolationsAreDecoded(t *testing.T) {
	s, err := status.New(codes.InvalidArgument, "user_ids[0] bad; cost too big").WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "user_ids[0]", Description: "bad"},
			{Field: "cost", Description: "too big"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []FieldViolation{{"user_ids[0]", "bad"}, {"cost", "too big"}}
	for _, err := range []error{s.Err(), wrap("BatchGetUsers", s.Err())} {
		got := FieldViolations(err)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%v: violations %+v", err, got)
		}
	}
	if FieldViolations(status.Error(codes.NotFound, "no")) != nil {
		t.Fatal("NOT_FOUND has no violations")
	}
}

func TestNonStatusErrorsAreLeftAlone(t *testing.T) {
	plain := errors.New("dial failed")
	if wrap("GetUser", plain) != plain || wrap("GetUser", nil) != nil || IsNotFound(plain) {
		t.Fatal("wrap changed an error that is no status")
	}
	if CodeName(codes.Code(99)) != "CODE(99)" || CodeName(codes.Canceled) != "CANCELLED" {
		t.Fatal("code names")
	}
}
