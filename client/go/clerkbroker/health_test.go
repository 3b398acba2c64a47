// The standard health service, the caller's token (against a second demo
// broker that runs with a policy file), and the client's settings.

package clerkbroker_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/example/clerk-broker/client/go/clerkbroker"
	pb "github.com/example/clerk-broker/client/go/clerkbrokerv1"
	"github.com/example/clerk-broker/client/go/internal/brokertest"
)

// callerToken is the token of the policy broker's one caller.
const callerToken = "go-client-test-token"

var (
	// policyDir holds the policy file; TestMain makes and removes it.
	policyDir  string
	policyOnce sync.Once
	policyDemo *brokertest.Demo
	policyErr  error
)

// withPolicy is a second demo broker whose policy file names one caller
// (callerToken) allowed the upstream budget, and a budget "writes" it may
// not use. Started once, for the tests that need it; TestMain stops it.
func withPolicy(t *testing.T) *brokertest.Demo {
	t.Helper()
	policyOnce.Do(func() {
		dir := policyDir
		sum := sha256.Sum256([]byte(callerToken))
		policy := fmt.Sprintf(`
[[budgets]]
name = "writes"
rate = "2/1s"

[[callers]]
name = "go-tests"
token_sha256 = "%s"
budgets = ["clerk"]
`, hex.EncodeToString(sum[:]))
		file := filepath.Join(dir, "policy.toml")
		if policyErr = os.WriteFile(file, []byte(policy), 0o600); policyErr != nil {
			return
		}
		policyDemo, policyErr = brokertest.StartDemo("--config", file, "--users", "50")
	})
	if policyErr != nil {
		t.Fatal(policyErr)
	}
	return policyDemo
}

func TestTheStandardHealthServiceReportsServing(t *testing.T) {
	client := connect(t, demo.Address)
	for _, service := range []string{"", "liveness", "clerk_broker.v1.UserService", "clerk_broker.v1.QuotaService"} {
		serving, err := client.Health(testContext(t), service)
		if err != nil || serving != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("%q: %v, %v", service, serving, err)
		}
	}
	if _, err := client.Health(testContext(t), "no.such.Service"); !clerkbroker.IsNotFound(err) {
		t.Fatalf("want NOT_FOUND, got %v", err)
	}
}

func TestTheTokenIsSentOnEveryCallAndNeverShown(t *testing.T) {
	broker := withPolicy(t)
	ctx := testContext(t)

	anonymous := connect(t, broker.Address)
	_, err := anonymous.CountUsers(ctx, nil)
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "WithToken") {
		t.Fatalf("want UNAUTHENTICATED saying what to do, got %v", err)
	}

	caller := connect(t, broker.Address, clerkbroker.WithToken(callerToken))
	if count, err := caller.CountUsers(ctx, nil); err != nil || count != 50 {
		t.Fatalf("count %d, %v", count, err)
	}
	// Streams carry it too.
	if got := ids(t, caller.ListUsers(ctx, &pb.ListUsersRequest{PageSize: 20})); len(got) != 50 {
		t.Fatalf("%d users exported", len(got))
	}
	if _, err := caller.AcquirePermit(ctx, clerkbroker.PermitRequest{}); err != nil {
		t.Fatal(err)
	}
	_, err = caller.AcquirePermit(ctx, clerkbroker.PermitRequest{Budget: "writes"})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "operator") {
		t.Fatalf("want PERMISSION_DENIED saying what to do, got %v", err)
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		if shown := fmt.Sprintf(format, caller); strings.Contains(shown, callerToken) {
			t.Fatalf("%s shows the token: %s", format, shown)
		}
	}

	wrong := connect(t, broker.Address, clerkbroker.WithToken("wrong-token-value"))
	_, err = wrong.GetUser(ctx, "user_doesnotexist")
	if status.Code(err) != codes.Unauthenticated || strings.Contains(err.Error(), "wrong-token-value") {
		t.Fatalf("want UNAUTHENTICATED without the token, got %v", err)
	}
}

func TestABadTokenOrTargetIsRefusedAtOnce(t *testing.T) {
	_, err := clerkbroker.New(demo.Address, clerkbroker.WithInsecure(), clerkbroker.WithToken("bad token"))
	if !errors.Is(err, clerkbroker.ErrInvalidToken) || strings.Contains(err.Error(), "bad token") {
		t.Fatalf("want ErrInvalidToken without the token, got %v", err)
	}
	for _, target := range []string{"ftp://" + demo.Address, "", "http://host:1/path"} {
		if _, err := clerkbroker.New(target); err == nil || !strings.Contains(err.Error(), "host:port") {
			t.Fatalf("%q: want an error naming the forms, got %v", target, err)
		}
	}
	if _, err := clerkbroker.New("https://"+demo.Address, clerkbroker.WithInsecure()); err == nil {
		t.Fatal("https:// with WithInsecure must be refused")
	}
	// A plain http:// target needs no WithInsecure.
	plain, err := clerkbroker.New("http://" + demo.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.CountUsers(testContext(t), nil); err != nil {
		t.Fatal(err)
	}
}
