// Exports: every matching user once, resume tokens, a forged token, and a
// connection cut mid-stream (through a TCP proxy) resumed to exactly the
// full set, or given up after bounded retries with a token to continue.

package clerkbroker_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/example/clerk-broker/client/go/clerkbroker"
	pb "github.com/example/clerk-broker/client/go/clerkbrokerv1"
	"github.com/example/clerk-broker/client/go/internal/brokertest"
)

func TestListUsersStreamsEveryMatchingUserOnce(t *testing.T) {
	client := connect(t, demo.Address)
	filter := &pb.UserFilter{NameQuery: "frances"}
	expected, err := client.CountUsers(testContext(t), filter)
	if err != nil || expected == 0 || expected >= total {
		t.Fatalf("count %d, %v", expected, err)
	}
	got := ids(t, client.ListUsers(testContext(t), &pb.ListUsersRequest{
		Filter: filter, OrderBy: "+created_at", PageSize: 250,
	}))
	unique := map[string]bool{}
	for _, id := range got {
		unique[id] = true
	}
	if uint64(len(got)) != expected || uint64(len(unique)) != expected {
		t.Fatalf("%d users (%d distinct), want %d", len(got), len(unique), expected)
	}
}

func TestAnExportContinuesFromAResumeToken(t *testing.T) {
	client := connect(t, demo.Address)
	export := client.Export(testContext(t), &pb.ListUsersRequest{OrderBy: "+created_at", PageSize: 25, MaxUsers: 60})
	var sizes []int
	var first []string
	for export.Next() {
		sizes = append(sizes, len(export.Message().GetUsers()))
		for _, user := range export.Message().GetUsers() {
			first = append(first, user.GetId())
		}
	}
	if export.Err() != nil || !reflect.DeepEqual(sizes, []int{25, 25, 10}) {
		t.Fatalf("message sizes %v, %v", sizes, export.Err())
	}
	rest := ids(t, client.ListUsers(testContext(t), &pb.ListUsersRequest{
		ResumeToken: export.ResumeToken(), PageSize: 500, MaxUsers: 140,
	}))
	if len(rest) != 140 {
		t.Fatalf("%d users after the token, want 140", len(rest))
	}
	if whole := firstUsers(t, client, 200); !reflect.DeepEqual(append(first, rest...), whole) {
		t.Fatal("the export and its continuation differ from one export of 200")
	}
}

func TestAForgedResumeTokenIsInvalidArgument(t *testing.T) {
	client := connect(t, demo.Address)
	users := client.ListUsers(testContext(t), &pb.ListUsersRequest{ResumeToken: "forged.token"})
	if users.Next() {
		t.Fatal("a forged token yielded a user")
	}
	if status.Code(users.Err()) != codes.InvalidArgument || users.Resumes() != 0 {
		t.Fatalf("want INVALID_ARGUMENT at once, got %v after %d resumes", users.Err(), users.Resumes())
	}
	if !strings.HasPrefix(users.Err().Error(), "clerkbroker: ListUsers: INVALID_ARGUMENT") {
		t.Fatalf("message %q", users.Err())
	}
}

func TestAnExportResumesByItselfAfterTheConnectionIsCut(t *testing.T) {
	client := connect(t, demo.Address)
	expected := firstUsers(t, client, 800)
	proxy, err := brokertest.StartProxy(demo.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	through := connect(t, proxy.Address)
	users := through.ListUsers(testContext(t), &pb.ListUsersRequest{OrderBy: "+created_at", PageSize: 10, MaxUsers: 800})
	defer users.Close()
	var got []string
	for users.Next() {
		got = append(got, users.User().GetId())
		if len(got) == 30 {
			proxy.Cut()
		}
	}
	if err := users.Err(); err != nil {
		t.Fatalf("export failed after %d users: %v", len(got), err)
	}
	if proxy.Connections() < 2 || users.Resumes() < 1 {
		t.Fatalf("the export did not reconnect: %d connections, %d resumes", proxy.Connections(), users.Resumes())
	}
	if !reflect.DeepEqual(got, expected) {
		t.Fatalf("got %d users, want exactly the %d of one uninterrupted export", len(got), len(expected))
	}
}

func TestAnExportGivesUpAfterBoundedRetriesWithATokenToContinue(t *testing.T) {
	client := connect(t, demo.Address)
	expected := firstUsers(t, client, 600)
	proxy, err := brokertest.StartProxy(demo.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	policy := clerkbroker.ResumePolicy{Retries: 2, Backoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
	through := connect(t, proxy.Address, clerkbroker.WithResumePolicy(policy))
	export := through.Export(testContext(t), &pb.ListUsersRequest{OrderBy: "+created_at", PageSize: 10, MaxUsers: 600})
	defer export.Close()
	var got []string
	for export.Next() {
		for _, user := range export.Message().GetUsers() {
			got = append(got, user.GetId())
		}
		if len(got) == 30 {
			proxy.Refuse()
		}
	}
	if status.Code(export.Err()) != codes.Unavailable || export.Resumes() != 2 {
		t.Fatalf("want UNAVAILABLE after 2 resumes, got %v after %d", export.Err(), export.Resumes())
	}
	if !strings.Contains(export.Err().Error(), "ResumeToken") {
		t.Fatalf("the message says what to do: %q", export.Err())
	}
	// Messages already received when the proxy refused may still arrive:
	// the token continues after the last one, whichever it was.
	rest := ids(t, client.ListUsers(testContext(t), &pb.ListUsersRequest{
		ResumeToken: export.ResumeToken(), MaxUsers: uint64(600 - len(got)),
	}))
	if !reflect.DeepEqual(append(got, rest...), expected) {
		t.Fatalf("%d users before and %d after the token differ from one export of 600", len(got), len(rest))
	}
}
