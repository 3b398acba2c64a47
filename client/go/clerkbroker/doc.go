// Package clerkbroker is the Go client of clerk-broker: a Client over the
// stubs generated from the repository's proto/ (package clerkbrokerv1) that
// sends the caller's token on every call, puts a default deadline on unary
// calls, waits for permits in the broker's fair queue, and resumes exports
// from their last resume token after UNAVAILABLE or a broken connection.
//
// Hello broker (with `cargo run --release -- demo` running):
//
//	broker, err := clerkbroker.New("127.0.0.1:50051", clerkbroker.WithInsecure())
//	if err != nil { ... }
//	defer broker.Close()
//	user, err := broker.GetUser(ctx, "user_WjqhESHrprLoQRaGgNMIoIuAr9n")
//
// Failed calls return an *Error: the broker's status (status.Code and
// status.FromError work on it), what to do about it (Error.Hint), and the
// google.rpc details the broker attaches: RetryAfter for RESOURCE_EXHAUSTED
// (google.rpc.RetryInfo), FieldViolations for INVALID_ARGUMENT
// (google.rpc.BadRequest). IsNotFound tells a missing user apart.
//
// The package keeps no global state: every setting lives in its Client.
package clerkbroker
