package interop

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The generator and the file it writes stay next to mipv6's golden tests,
// which read the file; `go generate ./mipv6/` runs the generator there.
const (
	goldenGenerator = "../../mipv6/testdata/gen_golden.py"
	goldenFile      = "../../mipv6/testdata/golden.json"
)

// TestGoldenUpToDate runs the generator with the installed scapy and
// expects the committed file, so that the vectors stay scapy's and nobody
// edits them by hand.
func TestGoldenUpToDate(t *testing.T) {
	requireScapy(t)
	out := filepath.Join(t.TempDir(), "golden.json")
	cmd := exec.Command(python3(), goldenGenerator, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", goldenGenerator, err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(goldenFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("got generator output differing from %s; run `go generate ./mipv6/` and review the diff:\n%s",
			goldenFile, firstDiff(string(want), string(got)))
	}
}

// firstDiff shows where two texts start to differ.
func firstDiff(a, b string) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	from := max(0, i-80)
	return fmt.Sprintf("committed: ...%q\ngenerated: ...%q", a[from:min(len(a), i+80)], b[from:min(len(b), i+80)])
}
