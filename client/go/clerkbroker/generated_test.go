// The committed stubs in clerkbrokerv1/ are exactly what generate.sh makes
// from proto/ now.

package clerkbroker_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
)

// stale says what to do when the stubs differ.
const stale = "out of date with proto/: run client/go/generate.sh (protoc and the plugins " +
	"from Debian's protobuf-compiler, protoc-gen-go, protoc-gen-go-grpc) and commit the result"

func TestTheGeneratedStubsMatchProto(t *testing.T) {
	out := t.TempDir()
	generate := exec.Command("bash", filepath.Join("..", "generate.sh"), "--out", out)
	if output, err := generate.CombinedOutput(); err != nil {
		t.Fatalf("generate.sh: %v\n%s", err, output)
	}
	fresh, committed := filepath.Join(out, "clerkbrokerv1"), filepath.Join("..", "clerkbrokerv1")
	names := listFiles(t, fresh)
	if !reflect.DeepEqual(names, listFiles(t, committed)) {
		t.Fatalf("clerkbrokerv1/ holds %v, generate.sh makes %v: %s", listFiles(t, committed), names, stale)
	}
	for _, name := range names {
		want, err := os.ReadFile(filepath.Join(fresh, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(committed, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("clerkbrokerv1/%s is %s", name, stale)
		}
	}
}

// listFiles names the files of dir, sorted.
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, entry := range entries {
		names = append(names, entry.Name())
	}
	sort.Strings(names)
	return names
}
