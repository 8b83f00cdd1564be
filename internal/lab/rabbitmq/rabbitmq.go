// Package rabbitmq runs the lab's broker: a private RabbitMQ node (own node
// name, data, ports, epmd and Erlang cookie) with the management plugin,
// listening on the host IP so that pods reach it. It runs Debian's
// rabbitmq-server as the rabbitmq user, the Erlang VM in the foreground, so
// the supervisor holds the broker's real PID: RabbitMQ 4.0.5 from Debian
// trixie by default, chrooted into a cached minimal trixie
// (hack/rabbitmq-root.sh) in a mount namespace of its own; bookworm's 3.10
// with MS2M_RABBITMQ_VERSION=3.10.
package rabbitmq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ms2m/ms2m/internal/lab/deps"
	"github.com/ms2m/ms2m/internal/lab/supervise"
)

// Server is Debian's rabbitmq-server start script, run without its root
// wrapper (which would put su between the supervisor and the VM).
const Server = "/usr/lib/rabbitmq/bin/rabbitmq-server"

// Params of the node.
type Params struct {
	Dir      string
	Bind     string
	Port     int // AMQP
	MgmtPort int
	DistPort int
	EPMDPort int
	Log      string
	// Root is the root file system the node runs from; empty: the host's.
	Root string
}

// Version is the RabbitMQ the lab runs: MS2M_RABBITMQ_VERSION, 4.0 or 3.10.
func Version() string {
	if v := os.Getenv("MS2M_RABBITMQ_VERSION"); v != "" {
		return v
	}
	return "4.0"
}

// AMQPURL is what clients use.
func (p Params) AMQPURL() string {
	return fmt.Sprintf("amqp://guest:guest@%s:%d/", p.Bind, p.Port)
}

// MgmtURL is the management API's base URL.
func (p Params) MgmtURL() string { return fmt.Sprintf("http://%s:%d", p.Bind, p.MgmtPort) }

// Install makes the broker's binaries ready and returns the root file
// system to run them from ("" for the host's): RabbitMQ 4's cached trixie
// root, built by the repository's hack/rabbitmq-root.sh on first use, or
// Debian's rabbitmq-server package (3.10), which does not start a node of
// its own.
func Install(ctx context.Context, logf func(string, ...any), repo string) (string, error) {
	switch Version() {
	case "4.0":
		cmd := exec.CommandContext(ctx, filepath.Join(repo, "hack", "rabbitmq-root.sh"))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("hack/rabbitmq-root.sh: %w", err)
		}
		return strings.TrimSpace(string(out)), nil
	case "3.10":
		if _, err := os.Stat(Server); err == nil {
			return "", nil
		}
		logf("apt-get install rabbitmq-server (~25 s)")
		return "", deps.AptInstall(ctx, "rabbitmq-server")
	}
	return "", fmt.Errorf("MS2M_RABBITMQ_VERSION=%s: 4.0 or 3.10", Version())
}

// rabbitmqUser is the uid and gid of the rabbitmq user of a root file
// system's /etc/passwd.
func rabbitmqUser(root string) (uid, gid int, err error) {
	if root == "" {
		u, err := user.Lookup("rabbitmq")
		if err != nil {
			return 0, 0, fmt.Errorf("user rabbitmq (from the rabbitmq-server package): %w", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		return uid, gid, nil
	}
	b, err := os.ReadFile(filepath.Join(root, "etc", "passwd"))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) > 3 && f[0] == "rabbitmq" {
			uid, _ = strconv.Atoi(f[2])
			gid, _ = strconv.Atoi(f[3])
			return uid, gid, nil
		}
	}
	return 0, 0, fmt.Errorf("no rabbitmq user in %s/etc/passwd", root)
}

// Prepare writes the node's configuration and cookie, owned by rabbitmq.
func Prepare(p Params) (uid, gid uint32, err error) {
	ui, gi, err := rabbitmqUser(p.Root)
	if err != nil {
		return 0, 0, err
	}
	for _, d := range []string{"mnesia", "log", "home"} {
		if err := os.MkdirAll(filepath.Join(p.Dir, d), 0o755); err != nil {
			return 0, 0, err
		}
	}
	conf := fmt.Sprintf(`listeners.tcp.1 = %s:%d
management.tcp.port = %d
management.tcp.ip = %s
loopback_users = none
log.console = true
log.console.level = warning
log.file = false
vm_memory_high_watermark.relative = 0.2
disk_free_limit.absolute = 50MB
collect_statistics_interval = 1000
`, p.Bind, p.Port, p.MgmtPort, p.Bind)
	cookie := make([]byte, 16)
	_, _ = rand.Read(cookie)
	files := map[string]struct {
		body string
		mode os.FileMode
	}{
		"rabbitmq.conf":       {conf, 0o644},
		"enabled_plugins":     {"[rabbitmq_management].\n", 0o644},
		"advanced.config":     {"[].\n", 0o644},
		"home/.erlang.cookie": {hex.EncodeToString(cookie), 0o400},
	}
	for name, f := range files {
		path := filepath.Join(p.Dir, name)
		_ = os.Remove(path)
		if err := os.WriteFile(path, []byte(f.body), f.mode); err != nil {
			return 0, 0, err
		}
	}
	err = filepath.Walk(p.Dir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, ui, gi)
	})
	return uint32(ui), uint32(gi), err
}

// Spec is the node's process. RUNNING_UNDER_SYSTEMD makes the start script
// exec the Erlang VM, which stops cleanly on SIGTERM; a private epmd port
// keeps the node's epmd apart from any other Erlang on the host.
func Spec(p Params, uid, gid uint32) supervise.Spec {
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + filepath.Join(p.Dir, "home"),
		"LANG=C.UTF-8",
		"RUNNING_UNDER_SYSTEMD=true",
		"RABBITMQ_NODENAME=ms2m-lab@localhost",
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(p.Dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(p.Dir, "log"),
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(p.Dir, "rabbitmq"),
		"RABBITMQ_ADVANCED_CONFIG_FILE=" + filepath.Join(p.Dir, "advanced.config"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(p.Dir, "enabled_plugins"),
		"RABBITMQ_PID_FILE=" + filepath.Join(p.Dir, "rabbitmq.pid"),
		"RABBITMQ_NODE_PORT=" + strconv.Itoa(p.Port),
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(p.DistPort),
		"ERL_EPMD_PORT=" + strconv.Itoa(p.EPMDPort),
		"ERL_CRASH_DUMP=" + filepath.Join(p.Dir, "erl_crash.dump"),
	}
	if p.Root == "" {
		return supervise.Spec{Name: "rabbitmq", Path: Server, Env: env, Dir: filepath.Join(p.Dir, "home"), Log: p.Log, UID: uid, GID: gid, Restart: true}
	}
	// As root, to mount /proc and the state directory into the root in a
	// mount namespace of the node's own (they vanish with it); chroot then
	// drops to the rabbitmq user and every step execs, so the supervisor
	// still holds the VM's PID.
	return supervise.Spec{Name: "rabbitmq", Path: "/usr/bin/unshare", Env: env, Dir: "/", Log: p.Log, Restart: true,
		Args: []string{"--mount", "--propagation", "private", "/bin/sh", "-c", chrootScript, p.Root, p.Dir, fmt.Sprintf("%d:%d", uid, gid)}}
}

// chrootScript is run as: sh -c chrootScript ROOT DIR UID:GID.
const chrootScript = `mount -t proc proc "$0/proc" && mkdir -p "$0$1" && mount --bind "$1" "$0$1" && exec chroot --userspec="$2" "$0" ` + Server

// ServerVersion is the running node's RabbitMQ version ("" when it does
// not answer).
func ServerVersion(ctx context.Context, p Params) string {
	var o struct {
		Version string `json:"rabbitmq_version"`
	}
	if overview(ctx, p, &o) != nil {
		return ""
	}
	return o.Version
}

// Healthy asks the management API for the overview.
func Healthy(ctx context.Context, p Params) error {
	return overview(ctx, p, nil)
}

// overview reads the management API's overview into out (nil: only
// whether it answers).
func overview(ctx context.Context, p Params, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.MgmtURL()+"/api/overview", nil)
	req.SetBasicAuth("guest", "guest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("management API: %s", resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
