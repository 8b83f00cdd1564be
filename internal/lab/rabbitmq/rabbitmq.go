// Package rabbitmq runs the lab's broker: a private RabbitMQ node (own node
// name, data, ports, epmd and Erlang cookie) with the management plugin,
// listening on the host IP so that pods reach it. It runs Debian's
// rabbitmq-server as the rabbitmq user, the Erlang VM in the foreground, so
// the supervisor holds the broker's real PID.
package rabbitmq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
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
}

// AMQPURL is what clients use.
func (p Params) AMQPURL() string {
	return fmt.Sprintf("amqp://guest:guest@%s:%d/", p.Bind, p.Port)
}

// MgmtURL is the management API's base URL.
func (p Params) MgmtURL() string { return fmt.Sprintf("http://%s:%d", p.Bind, p.MgmtPort) }

// Install installs Debian's rabbitmq-server when it is missing. The
// package does not start a node of its own.
func Install(ctx context.Context, logf func(string, ...any)) error {
	if _, err := os.Stat(Server); err == nil {
		return nil
	}
	logf("apt-get install rabbitmq-server (~25 s)")
	return deps.AptInstall(ctx, "rabbitmq-server")
}

// Prepare writes the node's configuration and cookie, owned by rabbitmq.
func Prepare(p Params) (uid, gid uint32, err error) {
	u, err := user.Lookup("rabbitmq")
	if err != nil {
		return 0, 0, fmt.Errorf("user rabbitmq (from the rabbitmq-server package): %w", err)
	}
	ui, _ := strconv.Atoi(u.Uid)
	gi, _ := strconv.Atoi(u.Gid)
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
	return supervise.Spec{Name: "rabbitmq", Path: Server, Env: env, Dir: filepath.Join(p.Dir, "home"), Log: p.Log, UID: uid, GID: gid}
}

// Healthy asks the management API for the overview.
func Healthy(ctx context.Context, p Params) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.MgmtURL()+"/api/overview", nil)
	req.SetBasicAuth("guest", "guest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("management API: %s", resp.Status)
	}
	return nil
}
