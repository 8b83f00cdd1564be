package main

import (
	"flag"
	"fmt"
	"strconv"
)

// config comes from flags, each defaulting to an environment variable.
type config struct {
	amqpURL      string
	exchange     string
	exchangeType string
	routingKey   string
	queue        string
	declare      bool
	rate         float64
	count        int64
	payloadSize  int
	firstSeq     int64
	producerID   string
	window       int
	httpPort     int // 0: no HTTP server
}

func parseConfig(args []string, getenv func(string) string) (config, error) {
	env := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	var c config
	var rate, count, size, first, window, port string
	fs := flag.NewFlagSet("producer", flag.ContinueOnError)
	fs.StringVar(&c.amqpURL, "amqp-url", env("MS2M_AMQP_URL", "amqp://guest:guest@localhost:5672/"), "broker URL (MS2M_AMQP_URL)")
	fs.StringVar(&c.exchange, "exchange", env("MS2M_EXCHANGE", "ms2m.demo"), "exchange to publish to (MS2M_EXCHANGE)")
	fs.StringVar(&c.exchangeType, "exchange-type", env("MS2M_EXCHANGE_TYPE", "direct"), "type when declaring it (MS2M_EXCHANGE_TYPE)")
	fs.StringVar(&c.routingKey, "routing-key", env("MS2M_ROUTING_KEY", "orders"), "routing key (MS2M_ROUTING_KEY)")
	fs.StringVar(&c.queue, "queue", env("MS2M_QUEUE", "orders"), "queue to declare and bind with -declare (MS2M_QUEUE)")
	declareDefault, err := strconv.ParseBool(env("MS2M_DECLARE", "false"))
	if err != nil {
		return c, fmt.Errorf("MS2M_DECLARE: %w", err)
	}
	fs.BoolVar(&c.declare, "declare", declareDefault, "declare exchange, queue and binding (MS2M_DECLARE)")
	fs.StringVar(&rate, "rate", env("MS2M_RATE", "10"), "messages per second, 0 for as fast as confirms allow (MS2M_RATE)")
	fs.StringVar(&count, "count", env("MS2M_COUNT", "0"), "stop after this many, 0 to run until signalled (MS2M_COUNT)")
	fs.StringVar(&size, "payload-size", env("MS2M_PAYLOAD_SIZE", "0"), "pad payloads to this many bytes (MS2M_PAYLOAD_SIZE)")
	fs.StringVar(&first, "first-seq", env("MS2M_FIRST_SEQ", "1"), "first sequence number; continue after a restart under the same -producer-id (MS2M_FIRST_SEQ)")
	fs.StringVar(&c.producerID, "producer-id", env("MS2M_PRODUCER_ID", ""), "this producer's identity (x-ms2m-producer); empty: a fresh one, a new sequence (MS2M_PRODUCER_ID)")
	fs.StringVar(&window, "window", env("MS2M_WINDOW", "64"), "unconfirmed messages in flight (MS2M_WINDOW)")
	fs.StringVar(&port, "http-port", env("MS2M_HTTP_PORT", "8081"), "port of /published, 0 for none (MS2M_HTTP_PORT)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.rate, err = strconv.ParseFloat(rate, 64); err != nil || c.rate < 0 {
		return c, fmt.Errorf("rate %q: want messages per second >= 0", rate)
	}
	if c.count, err = strconv.ParseInt(count, 10, 64); err != nil || c.count < 0 {
		return c, fmt.Errorf("count %q: want >= 0", count)
	}
	if c.payloadSize, err = strconv.Atoi(size); err != nil || c.payloadSize < 0 || c.payloadSize > 64<<20 {
		return c, fmt.Errorf("payload-size %q: want 0 to 64Mi", size)
	}
	if c.firstSeq, err = strconv.ParseInt(first, 10, 64); err != nil || c.firstSeq < 1 {
		return c, fmt.Errorf("first-seq %q: want >= 1", first)
	}
	if c.window, err = strconv.Atoi(window); err != nil || c.window < 1 {
		return c, fmt.Errorf("window %q: want >= 1", window)
	}
	if c.httpPort, err = strconv.Atoi(port); err != nil || c.httpPort < 0 || c.httpPort > 65535 {
		return c, fmt.Errorf("http-port %q: want 0-65535", port)
	}
	if c.declare && c.exchange == "" {
		return c, fmt.Errorf("declare: the default exchange cannot be declared; name an exchange")
	}
	return c, nil
}
