// The Client: its functional options, the connection (transport, the token
// as per-RPC credentials, the default deadline as an interceptor) and the
// unary calls.

package clerkbroker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	pb "github.com/example/clerk-broker/client/go/clerkbrokerv1"
)

// DefaultTarget is where a broker listens by default (the demo's address).
const DefaultTarget = "127.0.0.1:50051"

// DefaultTimeout is the deadline of a unary call whose context has none.
const DefaultTimeout = 10 * time.Second

// keepaliveTime is how often an idle connection with an open stream is
// pinged, so that an export on a dead connection fails (and resumes)
// instead of waiting forever: exports have no deadline.
const keepaliveTime = 20 * time.Second

// ErrInvalidToken is returned by New for a token that cannot be sent as a
// header value. The token itself is never part of the message.
var ErrInvalidToken = errors.New("clerkbroker: the caller token must be non-empty visible ASCII")

// Client is a connection to one broker. It is safe for concurrent use;
// Close it when done.
type Client struct {
	conn    *grpc.ClientConn
	users   pb.UserServiceClient
	quota   pb.QuotaServiceClient
	admin   pb.AdminServiceClient
	health  healthpb.HealthClient
	target  string
	timeout time.Duration
	resume  ResumePolicy
	// withToken says whether calls carry a token (the token itself is kept
	// only in the connection's credentials, so that no printing of the
	// Client can show it).
	withToken bool
}

// settings are what the options set, validated by New.
type settings struct {
	token       *string
	insecure    bool
	transport   credentials.TransportCredentials
	timeout     time.Duration
	resume      ResumePolicy
	dialOptions []grpc.DialOption
}

// Option configures a Client.
type Option func(*settings)

// WithToken sends the caller's bearer token as `authorization: Bearer …` on
// every call (needed when the broker runs with a policy file; the demo
// takes anyone).
func WithToken(token string) Option {
	return func(s *settings) { s.token = &token }
}

// WithInsecure speaks plaintext HTTP/2 (the demo, or a broker reached over
// a trusted network). A target written http://host:port means the same.
// Without it the connection uses TLS.
func WithInsecure() Option {
	return func(s *settings) { s.insecure = true }
}

// WithTransportCredentials sets the TLS configuration (a private CA, a
// client certificate for mutual TLS). Default: TLS with the system's roots.
func WithTransportCredentials(creds credentials.TransportCredentials) Option {
	return func(s *settings) { s.transport = creds }
}

// WithTimeout sets the deadline of unary calls whose context has none
// (default DefaultTimeout). AcquirePermit calls get their max_wait on top.
func WithTimeout(timeout time.Duration) Option {
	return func(s *settings) { s.timeout = timeout }
}

// WithResumePolicy sets how exports retry after UNAVAILABLE or a broken
// connection (default DefaultResumePolicy).
func WithResumePolicy(policy ResumePolicy) Option {
	return func(s *settings) { s.resume = policy }
}

// WithDialOptions passes further options to grpc.DialContext (after the
// client's own, so they may override them).
func WithDialOptions(options ...grpc.DialOption) Option {
	return func(s *settings) { s.dialOptions = append(s.dialOptions, options...) }
}

// New returns a client of the broker at target: host:port (TLS unless
// WithInsecure), http://host:port (plaintext) or https://host:port (TLS).
// It does not wait for the connection: the first call does.
func New(target string, options ...Option) (*Client, error) {
	s := settings{timeout: DefaultTimeout, resume: DefaultResumePolicy()}
	for _, option := range options {
		option(&s)
	}
	address, err := transport(target, &s)
	if err != nil {
		return nil, err
	}
	if s.timeout <= 0 {
		return nil, fmt.Errorf("clerkbroker: the timeout must be above 0, not %v", s.timeout)
	}
	c := &Client{target: address, timeout: s.timeout, resume: s.resume}
	dial := []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(c.defaultDeadline, wrapUnaryErrors),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime}),
	}
	if s.insecure {
		dial = append(dial, grpc.WithInsecure())
	} else {
		dial = append(dial, grpc.WithTransportCredentials(s.transport))
	}
	if s.token != nil {
		if !validToken(*s.token) {
			return nil, ErrInvalidToken
		}
		c.withToken = true
		dial = append(dial, grpc.WithPerRPCCredentials(bearer{
			header:   "Bearer " + *s.token,
			insecure: s.insecure,
		}))
	}
	conn, err := grpc.DialContext(context.Background(), address, append(dial, s.dialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("clerkbroker: cannot set up the connection to %q: %w", target, err)
	}
	c.conn = conn
	c.users = pb.NewUserServiceClient(conn)
	c.quota = pb.NewQuotaServiceClient(conn)
	c.admin = pb.NewAdminServiceClient(conn)
	c.health = healthpb.NewHealthClient(conn)
	return c, nil
}

// transport reads the scheme of target into s, and returns the address.
func transport(target string, s *settings) (string, error) {
	address := target
	switch {
	case strings.HasPrefix(target, "http://"):
		if s.transport != nil {
			return "", fmt.Errorf("clerkbroker: %q is plaintext, but TLS credentials were given: use https://", target)
		}
		address, s.insecure = strings.TrimPrefix(target, "http://"), true
	case strings.HasPrefix(target, "https://"):
		if s.insecure {
			return "", fmt.Errorf("clerkbroker: %q asks for TLS, but WithInsecure was given: use http://", target)
		}
		address = strings.TrimPrefix(target, "https://")
	case strings.Contains(target, "://"):
		return "", fmt.Errorf("clerkbroker: %q: the target is host:port, http://host:port or https://host:port", target)
	}
	if address == "" || strings.Contains(address, "/") {
		return "", fmt.Errorf("clerkbroker: %q: the target is host:port, http://host:port or https://host:port", target)
	}
	if s.insecure && s.transport != nil {
		return "", errors.New("clerkbroker: WithInsecure and WithTransportCredentials exclude each other")
	}
	if !s.insecure && s.transport == nil {
		s.transport = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	return address, nil
}

// validToken: a token must fit in a header value unchanged.
func validToken(token string) bool {
	if token == "" {
		return false
	}
	for i := 0; i < len(token); i++ {
		if token[i] < 0x21 || token[i] > 0x7e {
			return false
		}
	}
	return true
}

// bearer puts the caller's token on every call (unary and streams alike).
type bearer struct {
	header   string
	insecure bool
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": b.header}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: over
// plaintext only when the client was explicitly made insecure.
func (b bearer) RequireTransportSecurity() bool { return !b.insecure }

// String keeps the token out of any printing.
func (b bearer) String() string { return "bearer(<redacted>)" }

// GoString keeps the token out of %#v.
func (b bearer) GoString() string { return b.String() }

// defaultDeadline gives a unary call without a deadline the client's
// timeout, plus the max_wait of an AcquirePermit (the broker may hold such
// a call that long).
func (c *Client) defaultDeadline(ctx context.Context, method string, req, reply interface{},
	cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if _, ok := ctx.Deadline(); !ok {
		timeout := c.timeout
		if permit, ok := req.(*pb.AcquirePermitRequest); ok && permit.GetMaxWait() != nil {
			timeout += permit.GetMaxWait().AsDuration()
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// Close closes the connection; calls in flight end with CANCELED.
func (c *Client) Close() error { return c.conn.Close() }

// String shows where the client connects, never its token.
func (c *Client) String() string {
	token := "none"
	if c.withToken {
		token = "<redacted>"
	}
	return fmt.Sprintf("clerkbroker.Client(target=%s, token=%s)", c.target, token)
}

// GoString keeps %#v as short as String.
func (c *Client) GoString() string { return c.String() }

// Users is the generated UserService stub on the client's connection (the
// token, the default deadline and *Error wrapping apply), for anything the
// helpers do not cover.
func (c *Client) Users() pb.UserServiceClient { return c.users }

// Quota is the generated QuotaService stub on the client's connection.
func (c *Client) Quota() pb.QuotaServiceClient { return c.quota }

// Admin is the generated AdminService stub (InvalidateUser; needs the
// caller's admin scope).
func (c *Client) Admin() pb.AdminServiceClient { return c.admin }

// GetUser returns one user. A user Clerk does not know is an *Error for
// which IsNotFound is true.
func (c *Client) GetUser(ctx context.Context, userID string) (*pb.User, error) {
	return c.users.GetUser(ctx, &pb.GetUserRequest{UserId: userID})
}

// BatchGetUsers returns many users at once (1–500 ids); unknown ids come
// back in MissingUserIds.
func (c *Client) BatchGetUsers(ctx context.Context, userIDs []string) (*pb.BatchGetUsersResponse, error) {
	return c.users.BatchGetUsers(ctx, &pb.BatchGetUsersRequest{UserIds: userIDs})
}

// CountUsers returns how many users match filter (nil: all).
func (c *Client) CountUsers(ctx context.Context, filter *pb.UserFilter) (uint64, error) {
	reply, err := c.users.CountUsers(ctx, &pb.CountUsersRequest{Filter: filter})
	if err != nil {
		return 0, err
	}
	return reply.GetTotalCount(), nil
}

// Health returns the standard grpc.health.v1 status of service: "" for the
// broker as a whole (readiness), "liveness" for the process, or a service
// name such as "clerk_broker.v1.UserService". An unknown name is NOT_FOUND.
func (c *Client) Health(ctx context.Context, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	reply, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN, err
	}
	return reply.GetStatus(), nil
}
