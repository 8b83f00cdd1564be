package sdk_test

import (
	"context"
	"log"
	"os/signal"
	"syscall"

	"github.com/ms2m/ms2m/sdk"
)

// A migration-aware consumer: the handler changes the application's state;
// the SDK decides what reaches it, and when.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()

	total := 0
	c, err := sdk.NewConsumer(sdk.Config{
		URL:   "amqp://guest:guest@rabbitmq:5672/",
		Queue: "orders",
		Handler: func(_ context.Context, m sdk.Message) error {
			total += len(m.Body) // applied once per sequence number, in order
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Run(ctx); err != nil {
		log.Fatal(err)
	}
	log.Printf("applied up to seq %d, digest %s", c.Snapshot().LastSeq, c.Snapshot().Digest)
}
