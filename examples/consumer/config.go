package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// config comes from flags, each defaulting to an environment variable so
// that a pod spec needs only env.
type config struct {
	amqpURL      string
	queue        string
	declare      bool
	prefetch     int
	delay        time.Duration
	stateBytes   int64
	httpPort     int
	podInfoDir   string
	hostnameFile string
	// drain is how long HTTP keeps answering after SIGTERM, once the
	// consumer has stopped taking messages.
	drain time.Duration
	// journal, if set, is a file kept open that gets one line per applied
	// message.
	journal string
}

func parseConfig(args []string, getenv func(string) string) (config, error) {
	env := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	var c config
	var size, prefetch, port, delay, drain string
	fs := flag.NewFlagSet("consumer", flag.ContinueOnError)
	fs.StringVar(&c.amqpURL, "amqp-url", env("MS2M_AMQP_URL", "amqp://guest:guest@localhost:5672/"), "broker URL (MS2M_AMQP_URL)")
	fs.StringVar(&c.queue, "queue", env("MS2M_QUEUE", "orders"), "primary queue (MS2M_QUEUE)")
	declareDefault, err := strconv.ParseBool(env("MS2M_DECLARE_QUEUE", "false"))
	if err != nil {
		return c, fmt.Errorf("MS2M_DECLARE_QUEUE: %w", err)
	}
	fs.BoolVar(&c.declare, "declare-queue", declareDefault, "declare the queue, durable (MS2M_DECLARE_QUEUE)")
	fs.StringVar(&prefetch, "prefetch", env("MS2M_PREFETCH", "1"), "deliveries in flight (MS2M_PREFETCH)")
	fs.StringVar(&delay, "processing-delay", env("MS2M_PROCESSING_DELAY", "0s"), "work per message, e.g. 20ms (MS2M_PROCESSING_DELAY)")
	fs.StringVar(&size, "state-bytes", env("MS2M_STATE_BYTES", "0"), "in-memory state, e.g. 64Mi (MS2M_STATE_BYTES)")
	fs.StringVar(&port, "http-port", env("MS2M_HTTP_PORT", "8080"), "port of /state, /healthz, /readyz (MS2M_HTTP_PORT)")
	fs.StringVar(&c.podInfoDir, "podinfo-dir", env("MS2M_PODINFO_DIR", "/etc/podinfo"), "downward-API directory with uid and name (MS2M_PODINFO_DIR)")
	fs.StringVar(&c.hostnameFile, "hostname-file", env("MS2M_HOSTNAME_FILE", "/etc/hostname"), "pod name fallback (MS2M_HOSTNAME_FILE)")
	fs.StringVar(&drain, "shutdown-drain", env("MS2M_SHUTDOWN_DRAIN", "3s"), "after SIGTERM: stop consuming at once, keep answering HTTP this long (MS2M_SHUTDOWN_DRAIN)")
	fs.StringVar(&c.journal, "journal", env("MS2M_JOURNAL", ""), "append each applied sequence number to this file, kept open (MS2M_JOURNAL); on a node-local volume it pins the pod to its node: a checkpoint carries open files by path, not volume contents")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.drain, err = time.ParseDuration(drain); err != nil || c.drain < 0 {
		return c, fmt.Errorf("shutdown-drain %q: want a duration like 3s", drain)
	}
	if c.prefetch, err = strconv.Atoi(prefetch); err != nil || c.prefetch < 1 {
		return c, fmt.Errorf("prefetch %q: want a positive integer", prefetch)
	}
	if c.delay, err = time.ParseDuration(delay); err != nil || c.delay < 0 {
		return c, fmt.Errorf("processing-delay %q: want a duration like 20ms", delay)
	}
	if c.stateBytes, err = parseSize(size); err != nil {
		return c, fmt.Errorf("state-bytes: %w", err)
	}
	if c.httpPort, err = strconv.Atoi(port); err != nil || c.httpPort < 0 || c.httpPort > 65535 {
		return c, fmt.Errorf("http-port %q: want 0-65535", port)
	}
	return c, nil
}

// parseSize reads a byte count with an optional Kubernetes-style suffix:
// Ki, Mi, Gi (powers of 1024) or k, M, G (powers of 1000).
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}}
	mult := int64(1)
	num := strings.TrimSpace(s)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSuffix(num, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("%q: want a size like 64Mi", s)
	}
	return n * mult, nil
}
