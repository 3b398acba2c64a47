// One demo broker for the whole suite (see internal/brokertest), and the
// helpers every test file uses.

package clerkbroker_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/example/clerk-broker/client/go/clerkbroker"
	pb "github.com/example/clerk-broker/client/go/clerkbrokerv1"
	"github.com/example/clerk-broker/client/go/internal/brokertest"
)

// total is the number of the demo's users.
const total = 10_000

// demo is the suite's broker, started by TestMain.
var demo *brokertest.Demo

func TestMain(m *testing.M) {
	started, err := brokertest.StartDemo()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	demo = started
	if policyDir, err = os.MkdirTemp("", "clerk-broker-go-client"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		_, _ = demo.Stop()
		os.Exit(1)
	}
	code := m.Run()
	for _, broker := range []*brokertest.Demo{demo, policyDemo} {
		if broker == nil {
			continue
		}
		if exit, err := broker.Stop(); err != nil || exit != 0 {
			fmt.Fprintf(os.Stderr, "the broker must exit 0 after SIGTERM: exit %d, %v\n", exit, err)
			code = 1
		}
	}
	_ = os.RemoveAll(policyDir)
	os.Exit(code)
}

// connect is a plaintext client of the demo, closed when the test ends.
func connect(t *testing.T, address string, options ...clerkbroker.Option) *clerkbroker.Client {
	t.Helper()
	client, err := clerkbroker.New(address, append([]clerkbroker.Option{clerkbroker.WithInsecure()}, options...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// testContext ends with the test, and after a minute at most.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// ids collects the ids of every user of an export, failing on its error.
func ids(t *testing.T, users *clerkbroker.Users) []string {
	t.Helper()
	defer users.Close()
	var all []string
	for users.Next() {
		all = append(all, users.User().GetId())
	}
	if err := users.Err(); err != nil {
		t.Fatalf("export failed after %d users: %v", len(all), err)
	}
	return all
}

// firstUsers is the reference: the first n users by creation, in one call.
func firstUsers(t *testing.T, client *clerkbroker.Client, n uint64) []string {
	t.Helper()
	return ids(t, client.ListUsers(testContext(t), &pb.ListUsersRequest{OrderBy: "+created_at", MaxUsers: n}))
}
