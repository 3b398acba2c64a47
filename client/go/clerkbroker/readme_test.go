// The README's hello and examples/hello run against the demo, as a
// reader would run them.

package clerkbroker_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmeID is the user the hellos look up: the demo's first user (fixed seed).
const readmeID = "user_WjqhESHrprLoQRaGgNMIoIuAr9n"

// run runs `go run args...` in the module's root and returns its output.
func run(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"run"}, args...)...)
	cmd.Dir = ".."
	output, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go run %v: %v\n%s", args, err, output)
	}
	return string(output)
}

func TestTheReadmeHelloRuns(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)```go\n(.*?)```").FindSubmatch(readme)
	if block == nil {
		t.Fatal("README.md has no ```go block")
	}
	source := strings.ReplaceAll(string(block[1]), "127.0.0.1:50051", demo.Address)
	if source == string(block[1]) {
		t.Fatal("the README's hello names no demo address to replace")
	}
	file := filepath.Join(t.TempDir(), "main.go")
	if err := os.WriteFile(file, []byte(source), 0o600); err != nil {
		t.Fatal(err)
	}
	if output := run(t, file); !strings.HasPrefix(output, readmeID+" ") {
		t.Fatalf("the hello printed %q", output)
	}
}

func TestTheExampleRuns(t *testing.T) {
	output := run(t, "./examples/hello", demo.Address)
	for _, want := range []string{"user: " + readmeID, "users named frances: ", "exported: user_", "permit granted on clerk (1000 per 1s)"} {
		if !strings.Contains(output, want) {
			t.Fatalf("examples/hello printed no %q:\n%s", want, output)
		}
	}
}
