package sdk_test

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/sdk"
	"github.com/ms2m/ms2m/sdk/control"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// A consumer that shuts down takes its control queue with it: pods that
// come and go (rollouts, scale-downs, deleted namespaces) leave no durable
// queue on the broker. A queue something else still reads stays.
func TestShutDownConsumerRemovesItsControlQueue(t *testing.T) {
	b := broker(t)
	q := b.Name("events")
	b.Queue(t, q)
	pod := b.Name("consumer")
	ctrl := control.QueueName(pod)
	b.DeleteAtCleanup(t, ctrl)

	c := start(t, sdk.Config{URL: b.URL, Queue: q, Handler: (&recorder{}).handle, Identity: identity(t, t.TempDir(), "uid-1", pod)})
	sdktest.Eventually(t, 10*time.Second, "consumer connected", func() bool { return c.Status().Connected })
	if st := b.Inspect(t, ctrl); st.Missing || st.Consumers != 1 {
		t.Fatalf("control queue %s while the consumer runs: %+v", ctrl, st)
	}
	c.stop()
	if st := b.Inspect(t, ctrl); !st.Missing {
		t.Fatalf("control queue %s left behind by a consumer that shut down: %+v", ctrl, st)
	}

	// Read by someone else too (a pod of the same name), it stays.
	other := b.Name("other")
	b.DeleteAtCleanup(t, control.QueueName(other))
	c2 := start(t, sdk.Config{URL: b.URL, Queue: q, Handler: (&recorder{}).handle, Identity: identity(t, t.TempDir(), "uid-2", other)})
	sdktest.Eventually(t, 10*time.Second, "second consumer connected", func() bool { return c2.Status().Connected })
	conn, err := amqp.Dial(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Consume(control.QueueName(other), "", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	c2.stop()
	if st := b.Inspect(t, control.QueueName(other)); st.Missing {
		t.Fatal("a control queue another consumer still read was removed")
	}
}
