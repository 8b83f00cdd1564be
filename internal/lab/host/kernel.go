package host

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
)

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	// Root is the mounted directory inside its filesystem: for a bind mount
	// of a directory of the root filesystem, its absolute path.
	Root  string
	Point string
}

// Mounts lists the mounts, decoded from /proc/self/mountinfo.
func Mounts() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 4 {
			out = append(out, Mount{Root: strings.TrimSuffix(unescape(fs[3]), "//deleted"), Point: unescape(fs[4])})
		}
	}
	return out, sc.Err()
}

// unescape decodes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var n int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &n); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func under(p, prefix string) bool {
	prefix = strings.TrimSuffix(prefix, "/")
	return p == prefix || strings.HasPrefix(p, prefix+"/")
}

// MountsUnder lists the mount points at or below any of prefixes, and
// those elsewhere that bind a directory from below them (containerd mounts
// container snapshots under the temporary directory to read them), deepest
// first.
func MountsUnder(prefixes ...string) []string {
	all, _ := Mounts()
	var out []string
	for _, m := range all {
		for _, p := range prefixes {
			if under(m.Point, p) || under(m.Root, p) {
				out = append(out, m.Point)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// UnmountUnder detaches every mount at or below prefixes (netns bind
// mounts, container rootfs overlays, the kubelet's bind mount of its root).
func UnmountUnder(prefixes ...string) ([]string, error) {
	var done []string
	var errs []error
	for range 5 {
		ms := MountsUnder(prefixes...)
		if len(ms) == 0 {
			return done, nil
		}
		for _, m := range ms {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("umount %s: %w", m, err))
				continue
			}
			done = append(done, m)
		}
	}
	if ms := MountsUnder(prefixes...); len(ms) > 0 {
		errs = append(errs, fmt.Errorf("still mounted: %v", ms))
	}
	return done, errors.Join(errs...)
}

// Link is a network interface and its IPv4 addresses.
type Link struct {
	Name  string   `json:"ifname"`
	Kind  string   `json:"kind"`
	Addrs []string `json:"addrs"`
}

// Links lists the host's interfaces (through iproute2's JSON output).
func Links(ctx context.Context) ([]Link, error) {
	out, err := exec.CommandContext(ctx, "ip", "-j", "-d", "addr", "show").Output()
	if err != nil {
		return nil, fmt.Errorf("ip addr: %w", err)
	}
	var raw []struct {
		Name     string `json:"ifname"`
		LinkInfo struct {
			Kind string `json:"info_kind"`
		} `json:"linkinfo"`
		AddrInfo []struct {
			Family string `json:"family"`
			Local  string `json:"local"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, err
	}
	var ls []Link
	for _, r := range raw {
		l := Link{Name: r.Name, Kind: r.LinkInfo.Kind}
		for _, a := range r.AddrInfo {
			if a.Family == "inet" {
				l.Addrs = append(l.Addrs, a.Local)
			}
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// Routes lists the main table's IPv4 routes as "dst dev".
func Routes(ctx context.Context) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ip", "-j", "-4", "route", "show", "table", "all").Output()
	if err != nil {
		return nil, fmt.Errorf("ip route: %w", err)
	}
	var raw []struct {
		Dst   string `json:"dst"`
		Dev   string `json:"dev"`
		Table string `json:"table"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, err
	}
	var rs []string
	for _, r := range raw {
		rs = append(rs, strings.TrimSpace(r.Dst+" dev "+r.Dev+" "+r.Table))
	}
	sort.Strings(rs)
	return rs, nil
}

// inSubnets reports whether addr lies in one of subnets.
func inSubnets(addr string, subnets []string) bool {
	ip := net.ParseIP(strings.Split(addr, "/")[0])
	for _, s := range subnets {
		if _, n, err := net.ParseCIDR(s); err == nil && ip != nil && n.Contains(ip) {
			return true
		}
	}
	return false
}

// RemovePodLinks deletes the host ends of pod veths that a runtime killed
// without CNI DEL left behind: links holding an address of the pod subnets
// (ptp puts each node's gateway address on the host end), and links that
// routes into the subnets point at.
func RemovePodLinks(ctx context.Context, subnets []string) ([]string, error) {
	links, err := Links(ctx)
	if err != nil {
		return nil, err
	}
	victims := map[string]bool{}
	for _, l := range links {
		for _, a := range l.Addrs {
			if inSubnets(a, subnets) && l.Name != "lo" {
				victims[l.Name] = true
			}
		}
	}
	routes, _ := Routes(ctx)
	for _, r := range routes {
		f := strings.Fields(r)
		if len(f) >= 3 && inSubnets(f[0], subnets) && f[2] != "lo" {
			victims[f[2]] = true
		}
	}
	var removed []string
	var errs []error
	for name := range victims {
		if out, err := exec.CommandContext(ctx, "ip", "link", "del", name).CombinedOutput(); err != nil && linkExists(name) {
			errs = append(errs, fmt.Errorf("ip link del %s: %w: %s", name, err, out))
			continue
		}
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}

// linkExists: a veth's host end vanishes by itself once the kernel frees
// the netns of its pod (the runtime was killed, the namespace's last
// reference goes asynchronously) or once its peer is deleted, so a failed
// delete of a link that is gone anyway is not a leftover.
func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// NftTables lists the nftables tables as "family name", through the nft
// binary given (the lab's own; the hosts have none).
func NftTables(ctx context.Context, nft string) ([]string, error) {
	out, err := exec.CommandContext(ctx, nft, "list", "tables").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("nft list tables: %w: %s", err, out)
	}
	var ts []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == "table" {
			ts = append(ts, f[1]+" "+f[2])
		}
	}
	sort.Strings(ts)
	return ts, nil
}

// RemoveCRIUTables deletes the network-lock tables CRIU names
// "CRIU-<pid>" that a killed dump or restore did not remove.
func RemoveCRIUTables(ctx context.Context, nft string) ([]string, error) {
	ts, err := NftTables(ctx, nft)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, t := range ts {
		f := strings.Fields(t)
		if !strings.HasPrefix(f[1], "CRIU-") {
			continue
		}
		if out, err := exec.CommandContext(ctx, nft, "delete", "table", f[0], f[1]).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("nft delete table %s: %w: %s", t, err, out))
			continue
		}
		removed = append(removed, t)
	}
	return removed, errors.Join(errs...)
}
