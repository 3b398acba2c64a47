// Hello broker: one user, a count, the first users of an export, a permit.
//
//	cargo run --release -- demo          # in another terminal
//	cd client/go && go run ./examples/hello [host:port]
//
// A bare host:port or http://host:port is plaintext (the demo);
// https://host:port uses TLS. With a policy file, set CLERK_BROKER_TOKEN to
// the caller's token.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/example/clerk-broker/client/go/clerkbroker"
	pb "github.com/example/clerk-broker/client/go/clerkbrokerv1"
)

func main() {
	target := clerkbroker.DefaultTarget
	if len(os.Args) > 1 {
		target = os.Args[1]
	} else if url := os.Getenv("CLERK_BROKER_URL"); url != "" {
		target = url
	}
	options := []clerkbroker.Option{clerkbroker.WithTimeout(5 * time.Second)}
	if !strings.Contains(target, "://") {
		options = append(options, clerkbroker.WithInsecure())
	}
	if token := os.Getenv("CLERK_BROKER_TOKEN"); token != "" {
		options = append(options, clerkbroker.WithToken(token))
	}
	broker, err := clerkbroker.New(target, options...)
	if err != nil {
		log.Fatal(err)
	}
	defer broker.Close()
	ctx := context.Background()

	user, err := broker.GetUser(ctx, "user_WjqhESHrprLoQRaGgNMIoIuAr9n")
	if err != nil {
		// The error names the code and what to do; RetryAfter decodes
		// the broker's google.rpc.RetryInfo.
		delay, _ := clerkbroker.RetryAfter(err)
		fmt.Println("lookup failed:", err, "retry after:", delay)
	} else {
		fmt.Println("user:", user.GetId(), user.GetPrimaryEmailAddress())
	}

	count, err := broker.CountUsers(ctx, &pb.UserFilter{NameQuery: "frances"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("users named frances:", count)

	users := broker.ListUsers(ctx, &pb.ListUsersRequest{OrderBy: "+created_at", MaxUsers: 3})
	defer users.Close()
	for users.Next() {
		fmt.Println("exported:", users.User().GetId())
	}
	if err := users.Err(); err != nil {
		log.Fatal(err)
	}

	permit, err := broker.AcquirePermit(ctx, clerkbroker.PermitRequest{Cost: 1, Wait: 2 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("permit granted on %s (%d per %v)\n", permit.GetBudget(), permit.GetLimit(), permit.GetWindow().AsDuration())
}
