package supervise

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatal("condition not met within 10s")
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	var b []byte
	waitFor(t, func() bool { b, _ = os.ReadFile(path); return len(b) > 0 })
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f, err := statFields(string(b))
	return err == nil && f[0] == "Z"
}

func contains(s []int, v int) bool { return slices.Contains(s, v) }

func itoa(i int) string { return strconv.Itoa(i) }
