// GetUser, BatchGetUsers and CountUsers against the demo: values,
// NOT_FOUND, INVALID_ARGUMENT with google.rpc.BadRequest.

package clerkbroker_test

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/example/clerk-broker/client/go/clerkbroker"
	pb "github.com/example/clerk-broker/client/go/clerkbrokerv1"
)

func TestGetUserReturnsTheSeededUser(t *testing.T) {
	client := connect(t, demo.Address)
	user, err := client.GetUser(testContext(t), demo.SampleIDs[0])
	if err != nil {
		t.Fatal(err)
	}
	if user.GetId() != demo.SampleIDs[0] || !strings.Contains(user.GetRawJson(), demo.SampleIDs[0]) {
		t.Fatalf("got user %q, raw %.80q", user.GetId(), user.GetRawJson())
	}
	if user.GetCreatedAt().GetSeconds() <= 0 {
		t.Fatalf("created_at %v", user.GetCreatedAt())
	}
}

func TestAnUnknownUserIsNotFound(t *testing.T) {
	client := connect(t, demo.Address)
	_, err := client.GetUser(testContext(t), "user_doesnotexist")
	if !clerkbroker.IsNotFound(err) || status.Code(err) != codes.NotFound {
		t.Fatalf("want NOT_FOUND, got %v", err)
	}
	var failed *clerkbroker.Error
	if !errors.As(err, &failed) || failed.Method != "GetUser" || failed.Hint() != "" {
		t.Fatalf("want an *Error of GetUser without a hint, got %#v", err)
	}
	if !strings.HasPrefix(err.Error(), "clerkbroker: GetUser: NOT_FOUND: ") {
		t.Fatalf("message %q", err)
	}
	if _, ok := clerkbroker.RetryAfter(err); ok {
		t.Fatal("NOT_FOUND carries no RetryInfo")
	}
}

func TestAMalformedIDIsInvalidArgumentNamingTheField(t *testing.T) {
	client := connect(t, demo.Address)
	_, err := client.GetUser(testContext(t), "not an id!")
	if status.Code(err) != codes.InvalidArgument || clerkbroker.IsNotFound(err) {
		t.Fatalf("want INVALID_ARGUMENT, got %v", err)
	}
	violations := clerkbroker.FieldViolations(err)
	if len(violations) != 1 || violations[0].Field != "user_id" || violations[0].Description == "" {
		t.Fatalf("want one violation of user_id, got %+v", violations)
	}
	if !strings.Contains(err.Error(), "fix the request") {
		t.Fatalf("the message says what to do: %q", err)
	}
}

func TestEveryBadIDOfABatchIsNamed(t *testing.T) {
	client := connect(t, demo.Address)
	_, err := client.BatchGetUsers(testContext(t), []string{"bad id!", demo.SampleIDs[0], "also/bad"})
	violations := clerkbroker.FieldViolations(err)
	if status.Code(err) != codes.InvalidArgument || len(violations) != 2 {
		t.Fatalf("want INVALID_ARGUMENT naming 2 ids, got %v: %+v", err, violations)
	}
	for _, v := range violations {
		if !strings.HasPrefix(v.Field, "user_ids") {
			t.Fatalf("violation of %q", v.Field)
		}
	}
	if violations[0].Field == violations[1].Field {
		t.Fatalf("both violations name %q", violations[0].Field)
	}
}

func TestBatchGetUsersListsMissingIDs(t *testing.T) {
	client := connect(t, demo.Address)
	first, second := demo.SampleIDs[0], demo.SampleIDs[1]
	reply, err := client.BatchGetUsers(testContext(t), []string{second, "user_doesnotexist", first})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, user := range reply.GetUsers() {
		got = append(got, user.GetId())
	}
	if strings.Join(got, ",") != second+","+first {
		t.Fatalf("users %v", got)
	}
	if missing := reply.GetMissingUserIds(); len(missing) != 1 || missing[0] != "user_doesnotexist" {
		t.Fatalf("missing %v", missing)
	}
}

func TestCountUsersWithAndWithoutAFilter(t *testing.T) {
	client := connect(t, demo.Address)
	ctx := testContext(t)
	all, err := client.CountUsers(ctx, nil)
	if err != nil || all != total {
		t.Fatalf("count %d, %v", all, err)
	}
	one, err := client.CountUsers(ctx, &pb.UserFilter{UserIds: []string{demo.SampleIDs[0]}})
	if err != nil || one != 1 {
		t.Fatalf("count %d, %v", one, err)
	}
}
