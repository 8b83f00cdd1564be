package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ms2m/ms2m/internal/images"
)

// The lab runs every container as a process of this host, so the manager
// and the agents are measured from /proc where they run, without their
// cooperation and without a metrics pipeline in between.

// userHZ is the unit of /proc/PID/stat's times: fixed at 100 by the
// kernel's ABI whatever its internal tick rate.
const userHZ = 100

// Proc is one measured process.
type Proc struct {
	PID int
	// Role is "manager" or "agent@NODE".
	Role string
	// start (/proc/PID/stat starttime) tells a reused PID from the process.
	start uint64
}

// AgentRole is the role of the agent on node.
func AgentRole(node string) string { return "agent@" + node }

// FindProcs lists the manager and agent processes of the lab: the
// project's images start their binary from images.BinDir, and a process
// counts only inside one of the lab's node cgroups (cgroupRoots maps a
// node's cgroup root, such as /ms2m-node-a, to the node), so a binary of
// the same name elsewhere on the host is never taken for them.
func FindProcs(procRoot string, cgroupRoots map[string]string) ([]Proc, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, err
	}
	roles := map[string]string{path.Join(images.BinDir, "manager"): "manager", path.Join(images.BinDir, "agent"): "agent"}
	var out []Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		role, ok := roles[string(bytes.SplitN(cmd, []byte{0}, 2)[0])]
		if !ok {
			continue
		}
		node := nodeOf(filepath.Join(procRoot, e.Name(), "cgroup"), cgroupRoots)
		if node == "" {
			continue
		}
		if role == "agent" {
			role = AgentRole(node)
		}
		_, start, err := readStat(procRoot, pid)
		if err != nil {
			continue
		}
		out = append(out, Proc{PID: pid, Role: role, start: start})
	}
	return out, nil
}

// nodeOf is the node whose cgroup root holds the process, or "".
func nodeOf(cgroupFile string, roots map[string]string) string {
	b, err := os.ReadFile(cgroupFile)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for root, node := range roots {
			if parts[2] == root || strings.HasPrefix(parts[2], root+"/") {
				return node
			}
		}
	}
	return ""
}

// readStat returns the process's user+system CPU in seconds and its start
// time in ticks since boot.
func readStat(procRoot string, pid int) (cpu float64, start uint64, err error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, err
	}
	// The command name may hold spaces and parentheses: fields start after
	// the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("pid %d: malformed stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("pid %d: short stat", pid)
	}
	// f[0] is field 3 (state): utime is field 14, stime 15, starttime 22.
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	start, err3 := strconv.ParseUint(f[19], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, fmt.Errorf("pid %d: malformed stat", pid)
	}
	return float64(ut+st) / userHZ, start, nil
}

// alive reports whether the PID is still the process found.
func (p Proc) alive(procRoot string) bool {
	_, start, err := readStat(procRoot, p.PID)
	return err == nil && start == p.start
}

// peakRSS is VmHWM: the largest resident set since start or since the
// last resetPeak.
func peakRSS(procRoot string, pid int) (int64, error) {
	f, err := os.Open(filepath.Join(procRoot, strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("pid %d: no VmHWM", pid)
}

// resetPeak starts VmHWM afresh from the current RSS (clear_refs 5, root
// only), so that a run's peak is its own and not an earlier run's.
func resetPeak(procRoot string, pid int) error {
	return os.WriteFile(filepath.Join(procRoot, strconv.Itoa(pid), "clear_refs"), []byte("5"), 0)
}
