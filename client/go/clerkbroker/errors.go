// Errors: the broker's status with what to do about it, and the google.rpc
// details it carries (RetryInfo with RESOURCE_EXHAUSTED, BadRequest with
// INVALID_ARGUMENT), decoded.

package clerkbroker

import (
	"context"
	"errors"
	"fmt"
	"path"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a call that ended with a gRPC status. Its message names the RPC,
// the code, the broker's message and what to do; status.Code and
// status.FromError see the status it wraps.
type Error struct {
	// Method is the RPC's name, e.g. "GetUser".
	Method string
	status *status.Status
}

// GRPCStatus returns the status, for status.Code and status.FromError.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// Code is the status code.
func (e *Error) Code() codes.Code { return e.status.Code() }

// Error implements error: "clerkbroker: GetUser: NOT_FOUND: …".
func (e *Error) Error() string {
	text := fmt.Sprintf("clerkbroker: %s: %s: %s", e.Method, CodeName(e.Code()), e.status.Message())
	if hint := e.Hint(); hint != "" {
		text += " (" + hint + ")"
	}
	return text
}

// Hint says what to do about the error, from the broker's status table;
// "" when there is nothing to do but accept the answer (NOT_FOUND).
func (e *Error) Hint() string {
	switch e.Code() {
	case codes.InvalidArgument:
		return "fix the request: FieldViolations lists every bad field"
	case codes.Unauthenticated:
		return "send the caller's token with clerkbroker.WithToken, or a client certificate the broker knows"
	case codes.PermissionDenied:
		return "the caller lacks this service's scope or this budget: ask the broker's operator"
	case codes.ResourceExhausted:
		if delay, ok := e.RetryAfter(); ok {
			return "retry after " + delay.String()
		}
		return "retry later"
	case codes.OutOfRange:
		return "the request is too large: split it"
	case codes.Unavailable:
		return "retry with backoff; an export continues from its ResumeToken"
	case codes.DeadlineExceeded:
		return "retry with a longer deadline (the context's, or clerkbroker.WithTimeout)"
	case codes.Internal:
		return "a bug in the broker: retry, and report it"
	case codes.FailedPrecondition:
		return "Clerk rejects the broker's own secret key: page the broker's operator"
	default:
		return ""
	}
}

// RetryAfter is the delay of the google.rpc.RetryInfo the status carries
// (RESOURCE_EXHAUSTED); false if there is none. Details are decoded through
// status.Details, which every grpc-go version supports (Debian's genproto
// snapshot holds golang/protobuf-style messages, newer ones APIv2 messages).
func (e *Error) RetryAfter() (time.Duration, bool) {
	for _, detail := range e.status.Details() {
		if info, ok := detail.(*errdetails.RetryInfo); ok {
			return info.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

// FieldViolation is one bad field of a request, from google.rpc.BadRequest.
type FieldViolation struct {
	// Field is the field's path, e.g. "user_ids[3]".
	Field string
	// Description says what is wrong with it and what is allowed.
	Description string
}

// FieldViolations lists the google.rpc.BadRequest field violations the
// status carries (INVALID_ARGUMENT names every bad field); nil if none.
func (e *Error) FieldViolations() []FieldViolation {
	var violations []FieldViolation
	for _, detail := range e.status.Details() {
		request, ok := detail.(*errdetails.BadRequest)
		if !ok {
			continue
		}
		for _, v := range request.GetFieldViolations() {
			violations = append(violations, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
		}
	}
	return violations
}

// PermitRefusedError is AcquirePermit's answer when no permit could be had
// within the wait.
type PermitRefusedError struct {
	// Budget is the budget asked for (as the broker named it, when known).
	Budget string
	// RetryAfter is the broker's estimate of when a permit could be granted.
	RetryAfter time.Duration
}

// Error implements error.
func (e *PermitRefusedError) Error() string {
	return fmt.Sprintf("clerkbroker: permit refused on budget %q: retry after %v", e.Budget, e.RetryAfter)
}

// IsNotFound tells whether err says that the user (or budget) does not exist.
func IsNotFound(err error) bool { return codeOf(err) == codes.NotFound }

// RetryAfter is how long to wait before trying again: the RetryInfo of a
// RESOURCE_EXHAUSTED error, or a refused permit's estimate; false for
// errors that carry no delay.
func RetryAfter(err error) (time.Duration, bool) {
	var refused *PermitRefusedError
	if errors.As(err, &refused) {
		return refused.RetryAfter, true
	}
	var failed *Error
	if errors.As(err, &failed) {
		return failed.RetryAfter()
	}
	if s, ok := status.FromError(err); ok && s != nil {
		return (&Error{status: s}).RetryAfter()
	}
	return 0, false
}

// FieldViolations lists the bad fields an INVALID_ARGUMENT error names.
func FieldViolations(err error) []FieldViolation {
	var failed *Error
	if errors.As(err, &failed) {
		return failed.FieldViolations()
	}
	if s, ok := status.FromError(err); ok && s != nil {
		return (&Error{status: s}).FieldViolations()
	}
	return nil
}

// codeOf is the status code of err, looking through wrapping.
func codeOf(err error) codes.Code {
	var failed *Error
	if errors.As(err, &failed) {
		return failed.Code()
	}
	return status.Code(err)
}

// wrap turns a call's status error into an *Error for method (a full gRPC
// method name or a short one); nil and non-status errors pass unchanged.
func wrap(method string, err error) error {
	if err == nil {
		return nil
	}
	var failed *Error
	if errors.As(err, &failed) {
		return err
	}
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	return &Error{Method: path.Base(method), status: s}
}

// wrapUnaryErrors makes every failed unary call's error an *Error.
func wrapUnaryErrors(ctx context.Context, method string, req, reply interface{},
	cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return wrap(method, invoker(ctx, method, req, reply, cc, opts...))
}

// CodeName is the canonical name of a code, as in the gRPC documentation
// and the broker's README (NOT_FOUND, not NotFound).
func CodeName(code codes.Code) string {
	names := [...]string{
		codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
		codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
		codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
		codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
		codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
		codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
		codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS",
		codes.Unauthenticated: "UNAUTHENTICATED",
	}
	if int(code) < len(names) {
		return names[code]
	}
	return fmt.Sprintf("CODE(%d)", uint32(code))
}
