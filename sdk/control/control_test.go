package control

import "testing"

func TestRoundTrip(t *testing.T) {
	m, err := Decode(NewStartReplay("ms2m.replay.abc", "").Encode())
	if err != nil {
		t.Fatal(err)
	}
	p, err := m.Replay()
	if err != nil || p.Queue != "ms2m.replay.abc" {
		t.Fatalf("payload = %+v, %v", p, err)
	}
	if got := string(NewEndReplay().Encode()); got != `{"type":"END_REPLAY"}` {
		t.Fatalf("END_REPLAY encodes as %s", got)
	}
}

// The wire format of MS2M/SHADOW workloads must parse unchanged.
func TestDecodeMS2MWireFormat(t *testing.T) {
	for _, tc := range []struct {
		body    string
		wantErr bool
	}{
		{`{"type": "START_REPLAY", "payload": {"queue": "orders.ms2m-replay"}}`, false},
		{`{"type":"END_REPLAY"}`, false},
		{`{"type":"START_REPLAY"}`, true},
		{`{"type":"START_REPLAY","payload":{"queue":""}}`, true},
		{`{"type":"PAUSE"}`, true},
		{`not json`, true},
	} {
		_, err := Decode([]byte(tc.body))
		if (err != nil) != tc.wantErr {
			t.Errorf("Decode(%s) error = %v, want error %v", tc.body, err, tc.wantErr)
		}
	}
}

func TestQueueName(t *testing.T) {
	if QueueName("consumer-0") != "ms2m.control.consumer-0" {
		t.Fatal(QueueName("consumer-0"))
	}
}

func TestPodQueueName(t *testing.T) {
	if PodQueueName("", "c-0") != QueueName("c-0") || PodQueueName("shop", "c-0") != "ms2m.control.shop/c-0" {
		t.Fatal(PodQueueName("shop", "c-0"))
	}
	if PodQueueName("a.b", "c") == PodQueueName("a", "b.c") {
		t.Fatal("namespaced queue names collide")
	}
}

func TestReleaseRoundTrip(t *testing.T) {
	m, err := Decode(NewRelease("ms2m.reply.m1", "m1").Encode())
	if err != nil {
		t.Fatal(err)
	}
	p, err := m.ReleaseOf()
	if err != nil || p.ReplyTo != "ms2m.reply.m1" || p.Migration != "m1" {
		t.Fatalf("payload = %+v, %v", p, err)
	}
	for _, body := range []string{`{"type":"RELEASE"}`, `{"type":"RELEASE","payload":{"replyTo":"q"}}`, `{"type":"RELEASE","payload":{"migration":"m"}}`} {
		if _, err := Decode([]byte(body)); err == nil {
			t.Errorf("Decode(%s) accepted a RELEASE that names no reply queue or migration", body)
		}
	}
	r, err := DecodeReport(Report{Type: Released, Pod: "p", Fence: "m1"}.Encode())
	if err != nil || r.Type != Released || r.Fence != "m1" {
		t.Fatalf("RELEASED report = %+v, %v", r, err)
	}
}
