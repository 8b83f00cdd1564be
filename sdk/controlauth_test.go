package sdk_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/sdk"
	"github.com/ms2m/ms2m/sdk/control"
	"github.com/ms2m/ms2m/sdk/sdktest"
)

// tenantUser adds a second user of the broker's vhost, as another tenant
// sharing it would have, and returns its AMQP URL.
func tenantUser(t *testing.T, b *sdktest.Broker, name string) string {
	t.Helper()
	admin, _ := url.Parse(b.URL)
	pass, _ := admin.User.Password()
	put := func(path string, body any) {
		t.Helper()
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPut, b.ManagementURL+path, bytes.NewReader(raw))
		req.SetBasicAuth(admin.User.Username(), pass)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("management API PUT %s: %s", path, resp.Status)
		}
	}
	put("/api/users/"+name, map[string]string{"password": "tenant-pw", "tags": ""})
	put("/api/permissions/%2F/"+name, map[string]string{"configure": ".*", "write": ".*", "read": ".*"})
	t.Cleanup(func() {
		req, _ := http.NewRequest(http.MethodDelete, b.ManagementURL+"/api/users/"+name, nil)
		req.SetBasicAuth(admin.User.Username(), pass)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	})
	u := *admin
	u.User = url.UserPassword(name, "tenant-pw")
	return u.String()
}

func publishAs(t *testing.T, amqpURL, queue string, p amqp.Publishing) error {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch.PublishWithDeferredConfirm("", queue, false, false, p)
	if err != nil {
		return err
	}
	select {
	case e := <-closed:
		return e
	case <-dc.Done():
		if !dc.Acked() {
			return errors.New("nacked")
		}
		return nil
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to the publish")
	}
	return nil
}

// Only the broker users the consumer trusts steer it: a START_REPLAY or a
// fence from another tenant of the vhost, or with no user-id, is acked and
// ignored; a forged user-id never reaches the consumer (the broker refuses
// it); the controller's (the workload's own user) is obeyed.
func TestControlMessagesFromOthersAreRefused(t *testing.T) {
	b := broker(t)
	primary, replay := b.Name("orders"), b.Name("orders.replay")
	pod := b.Name("consumer-0-target")
	b.Queue(t, primary)
	b.Queue(t, replay)
	b.DeleteAtCleanup(t, control.QueueName(pod))
	tenant := tenantUser(t, b, b.Name("tenant"))

	var app recorder
	snap := sdk.Snapshot{}
	tgt := start(t, sdk.Config{URL: b.URL, Queue: primary, Handler: app.handle, Restore: &snap,
		Identity: identity(t, t.TempDir(), "uid-b", pod)})
	sdktest.Eventually(t, 10*time.Second, "target on its control queue", func() bool {
		return b.Inspect(t, control.QueueName(pod)).Consumers == 1
	})
	reports := b.Name("reports")
	b.Queue(t, reports)
	start := control.NewStartReplay(replay, reports)

	// No user-id: anyone who may publish on the vhost.
	if err := publishAs(t, b.URL, control.QueueName(pod), amqp.Publishing{Body: start.Encode()}); err != nil {
		t.Fatal(err)
	}
	// Another tenant, as itself.
	if err := publishAs(t, tenant, control.QueueName(pod), amqp.Publishing{Body: start.Encode(), UserId: b.Name("tenant")}); err != nil {
		t.Fatal(err)
	}
	// Another tenant, posing as the workload's user: the broker refuses.
	err := publishAs(t, tenant, control.QueueName(pod), amqp.Publishing{Body: start.Encode(), UserId: b.User()})
	var aerr *amqp.Error
	if !errors.As(err, &aerr) || aerr.Code != amqp.PreconditionFailed {
		t.Fatalf("a forged user-id was not refused by the broker: %v", err)
	}
	// A forged fence asking for a FENCE_PASSED report.
	if err := publishAs(t, tenant, primary, amqp.Publishing{Headers: amqp.Table{sdk.FenceHeader: "mig-x"}, ReplyTo: reports}); err != nil {
		t.Fatal(err)
	}
	sdktest.Eventually(t, 10*time.Second, "two refusals", func() bool { return tgt.Counters().ControlRefused == 2 })
	time.Sleep(200 * time.Millisecond)
	if tgt.Mode() != sdk.AwaitingReplay {
		t.Fatalf("mode %s: a message from someone else started the replay", tgt.Mode())
	}
	if q := b.Inspect(t, reports); q.Ready != 0 {
		t.Fatalf("%d reports sent to someone else's request", q.Ready)
	}

	// The controller, as the workload's user.
	b.SendControl(t, pod, start)
	if r := b.Report(t, reports); r.Type != control.ReplayStarted {
		t.Fatalf("report %+v, want %s", r, control.ReplayStarted)
	}
	b.SendControl(t, pod, control.Message{Type: control.EndReplay})
	if r := b.Report(t, reports); r.Type != control.ReplayDone {
		t.Fatalf("report %+v, want %s", r, control.ReplayDone)
	}
	// On its primary queue now, it meets the forged fence.
	sdktest.Eventually(t, 10*time.Second, "the forged fence refused", func() bool { return tgt.Counters().ControlRefused == 3 })
	time.Sleep(200 * time.Millisecond)
	if f := tgt.Counters().Fences; f != 0 {
		t.Fatalf("%d fences passed: a forged fence was taken for the controller's", f)
	}
	if q := b.Inspect(t, reports); q.Ready != 0 {
		t.Fatalf("%d reports (FENCE_PASSED) sent for a forged fence", q.Ready)
	}
}
