// Package brokertest starts real brokers for the client's tests: the
// broker binary in demo mode on 127.0.0.1:0, its address read from the
// banner it prints; and a TCP proxy in front of it that a test can cut.
package brokertest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Budget is the demo's upstream budget: generous, and all of it may be
// taken at once (burst = limit), so that one permit can exhaust it.
const (
	BudgetLimit  = 1000
	BudgetWindow = time.Second
)

// bannerTimeout bounds the wait for a starting broker's banner.
const bannerTimeout = 60 * time.Second

var (
	servingLine = regexp.MustCompile(`serving gRPC on (\S+)`)
	sampleID    = regexp.MustCompile(`"(user_[A-Za-z0-9]{20,})"`)
)

// Demo is a running demo broker.
type Demo struct {
	// Address is the host:port it serves gRPC on.
	Address string
	// SampleIDs are the banner's user ids (from the demo's fixed seed).
	SampleIDs []string
	cmd       *exec.Cmd
	log       *tail
	exited    chan struct{}
}

// Repo is the repository's root: $CLERK_BROKER_REPO (the test script runs
// the suite from a copy), or the checkout this file is in.
func Repo() string {
	if repo := os.Getenv("CLERK_BROKER_REPO"); repo != "" {
		return repo
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..")
}

// Binary is the broker binary: $CLERK_BROKER_BIN, or a fresh `cargo build`.
func Binary() (string, error) {
	if bin := os.Getenv("CLERK_BROKER_BIN"); bin != "" {
		return bin, nil
	}
	build := exec.Command("cargo", "build", "--bin", "clerk-broker", "--message-format=json-render-diagnostics")
	build.Dir = Repo()
	build.Stderr = os.Stderr
	out, err := build.Output()
	if err != nil {
		return "", fmt.Errorf("cargo build: %w", err)
	}
	for _, line := range bytes.Split(out, []byte("\n")) {
		var message struct {
			Reason     string `json:"reason"`
			Executable string `json:"executable"`
			Target     struct {
				Name string `json:"name"`
			} `json:"target"`
		}
		if json.Unmarshal(line, &message) == nil && message.Reason == "compiler-artifact" &&
			message.Executable != "" && message.Target.Name == "clerk-broker" {
			return message.Executable, nil
		}
	}
	return "", errors.New("cargo built no clerk-broker binary")
}

// StartDemo starts `clerk-broker demo` with extra arguments (e.g.
// "--config", file) and returns once it serves.
func StartDemo(args ...string) (*Demo, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	// Every listener on a free port: suites and brokers run side by side.
	args = append([]string{"demo", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
		"--clerk-api-listen", "127.0.0.1:0"}, args...)
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CLERK_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env,
		fmt.Sprintf("CLERK_BROKER_UPSTREAM_RATE=%d/%s", BudgetLimit, BudgetWindow),
		fmt.Sprintf("CLERK_BROKER_UPSTREAM_BURST=%d", BudgetLimit))
	log := &tail{}
	cmd.Stderr = log
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	demo := &Demo{cmd: cmd, log: log, exited: make(chan struct{})}
	banner := make(chan []string, 1)
	go demo.read(stdout, banner)
	go func() {
		_ = cmd.Wait()
		close(demo.exited)
	}()
	select {
	case lines := <-banner:
		if len(lines) > 0 {
			if m := servingLine.FindStringSubmatch(lines[0]); m != nil {
				demo.Address = m[1]
			}
		}
		for _, line := range lines {
			if strings.Contains(line, "BatchGetUsers") {
				for _, m := range sampleID.FindAllStringSubmatch(line, -1) {
					demo.SampleIDs = append(demo.SampleIDs, m[1])
				}
			}
		}
		if demo.Address == "" {
			demo.kill()
			return nil, fmt.Errorf("the demo printed no banner; its log:\n%s", log)
		}
		return demo, nil
	case <-demo.exited:
		return nil, fmt.Errorf("the demo exited at start; its log:\n%s", log)
	case <-time.After(bannerTimeout):
		demo.kill()
		return nil, fmt.Errorf("the demo printed no banner in %v; its log:\n%s", bannerTimeout, log)
	}
}

// read hands the banner (up to "Press Ctrl-C") to banner, then keeps
// draining stdout so that the broker never blocks on it.
func (d *Demo) read(stdout io.Reader, banner chan<- []string) {
	lines := bufio.NewScanner(stdout)
	var seen []string
	sent := false
	for lines.Scan() {
		if sent {
			continue
		}
		seen = append(seen, lines.Text())
		if strings.HasPrefix(lines.Text(), "Press Ctrl-C") {
			banner <- seen
			sent = true
		}
	}
	if !sent {
		banner <- nil
	}
}

func (d *Demo) kill() {
	_ = d.cmd.Process.Kill()
	<-d.exited
}

// Stop sends SIGTERM and returns the exit code (-1 for a signal), killing
// the broker if it has not exited within 30 s.
func (d *Demo) Stop() (int, error) {
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return -1, err
	}
	select {
	case <-d.exited:
		return d.cmd.ProcessState.ExitCode(), nil
	case <-time.After(30 * time.Second):
		d.kill()
		return -1, fmt.Errorf("the broker did not exit within 30 s of SIGTERM; its log:\n%s", d.log)
	}
}

// Log is the end of what the broker wrote on stderr.
func (d *Demo) Log() string { return d.log.String() }

// tail keeps the last 20 kB written to it.
type tail struct {
	mu   sync.Mutex
	data []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.data = append(t.data, p...)
	if over := len(t.data) - 20_000; over > 0 {
		t.data = t.data[over:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.data)
}
