// Package control is the MS2M control protocol between the migration
// controller and a migrating workload: JSON messages on a per-pod queue
// named ms2m.control.<pod-name>. Workloads written for MS2M/SHADOW speak it
// already; the ms2m SDK speaks it for workloads that import it.
package control

import (
	"encoding/json"
	"fmt"
)

// Message types.
const (
	// StartReplay tells a restored consumer to consume the replay queue
	// named in the payload (and nothing else yet).
	StartReplay = "START_REPLAY"
	// EndReplay tells it to finish the replay queue and switch to its
	// primary queue.
	EndReplay = "END_REPLAY"

	// ReplayStarted is the consumer's answer to START_REPLAY, on the
	// payload's replyTo queue: it replays, and will report.
	ReplayStarted = "REPLAY_STARTED"
	// ReplayDone is its report once the replay queue is drained and it
	// consumes its primary queue: what the handoff brought it.
	ReplayDone = "REPLAY_DONE"
	// FencePassed is a source's report that it reached a fence message
	// the controller put into its queue, on the fence's reply-to queue:
	// everything queued before the fence has been applied.
	FencePassed = "FENCE_PASSED"
	// Release tells a source that its target takes the stream over: stop
	// consuming the primary queue for good, after applying what was
	// delivered, and answer RELEASED on the payload's replyTo queue. The
	// process keeps running (and serving its clients) until its pod goes.
	Release = "RELEASE"
	// Released is a source's answer to RELEASE: it consumes nothing but
	// its control queue any more, and everything it took is acked.
	Released = "RELEASED"
	// StreamGap is a replaying consumer's report, sent at once, that a
	// producer's sequence jumped: messages the handoff should have brought
	// it are missing. A controller whose source still serves can then roll
	// back before anything is lost; REPLAY_DONE would come too late.
	StreamGap = "STREAM_GAP"
)

// QueuePrefix prefixes every control queue.
const QueuePrefix = "ms2m.control."

// QueueName is the control queue of a pod, as MS2M names it: by pod name
// alone, so that pods of the same name in two namespaces share it (and
// steal each other's messages).
func QueueName(pod string) string { return QueuePrefix + pod }

// PodQueueName is the control queue of a pod that knows its namespace:
// ms2m.control.<namespace>/<pod> ('/' appears in neither name, so no two
// pods share it). Without a namespace it is QueueName.
func PodQueueName(namespace, pod string) string {
	if namespace == "" {
		return QueueName(pod)
	}
	return QueuePrefix + namespace + "/" + pod
}

// Message is one control message: {"type": "...", "payload": {...}}.
type Message struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// ReplayPayload is START_REPLAY's payload.
type ReplayPayload struct {
	// Queue is the replay queue to consume.
	Queue string `json:"queue"`
	// ReplyTo, when set, is where a consumer that reports (the ms2m SDK)
	// sends REPLAY_STARTED and REPLAY_DONE. Workloads written for MS2M
	// ignore it.
	ReplyTo string `json:"replyTo,omitempty"`
}

// NewStartReplay builds a START_REPLAY message for the replay queue; a
// consumer that reports answers on replyTo ("": no answer asked).
func NewStartReplay(queue, replyTo string) Message {
	p, _ := json.Marshal(ReplayPayload{Queue: queue, ReplyTo: replyTo}) // strings always marshal
	return Message{Type: StartReplay, Payload: p}
}

// Report is what a consumer tells the controller of its handoff, counted
// from the START_REPLAY it answers.
type Report struct {
	// Type is ReplayStarted, ReplayDone, FencePassed or StreamGap.
	Type string `json:"type"`
	// Pod is the reporting pod's name; ReplayQueue the queue it replays.
	Pod         string `json:"pod"`
	ReplayQueue string `json:"replayQueue"`
	// Replayed messages applied from replay queues; Duplicates skipped as
	// applied already (the overlap the handoff needs).
	Replayed   int64 `json:"replayed"`
	Duplicates int64 `json:"duplicates"`
	// Gaps counts applied messages whose producer's sequence jumped;
	// Missing the sequence numbers jumped over: messages lost.
	Gaps    int64 `json:"gaps"`
	Missing int64 `json:"missing"`
	// Fence names the migration whose fence a FENCE_PASSED report is for,
	// or whose RELEASE a RELEASED report answers.
	Fence string `json:"fence,omitempty"`
	// Releases, on FENCE_PASSED, says the consumer understands RELEASE:
	// the controller may take the stream from it without deleting its pod.
	Releases bool `json:"releases,omitempty"`
}

// Encode marshals a report.
func (r Report) Encode() []byte {
	b, _ := json.Marshal(r) // a struct of strings and integers always marshals
	return b
}

// DecodeReport parses a consumer's report.
func DecodeReport(body []byte) (Report, error) {
	var r Report
	if err := json.Unmarshal(body, &r); err != nil {
		return Report{}, fmt.Errorf("report is not JSON: %w", err)
	}
	switch r.Type {
	case ReplayStarted, ReplayDone, FencePassed, StreamGap, Released:
	default:
		return Report{}, fmt.Errorf("unknown report type %q", r.Type)
	}
	return r, nil
}

// ReplyQueuePrefix prefixes the queue a migration reads reports from.
const ReplyQueuePrefix = "ms2m.reply."

// NewEndReplay builds an END_REPLAY message.
func NewEndReplay() Message { return Message{Type: EndReplay} }

// ReleasePayload is RELEASE's payload.
type ReleasePayload struct {
	// ReplyTo is where the source answers RELEASED.
	ReplyTo string `json:"replyTo"`
	// Migration names the migration that asks; RELEASED carries it back
	// (Report.Fence), so that an answer to an earlier migration is not
	// taken for this one's.
	Migration string `json:"migration"`
}

// NewRelease builds a RELEASE message for migration, answered on replyTo.
func NewRelease(replyTo, migration string) Message {
	p, _ := json.Marshal(ReleasePayload{ReplyTo: replyTo, Migration: migration}) // strings always marshal
	return Message{Type: Release, Payload: p}
}

// Encode marshals a message.
func (m Message) Encode() []byte {
	b, _ := json.Marshal(m) // RawMessage payloads are valid JSON by construction or by Decode
	return b
}

// Decode parses a control message and checks that it is one this protocol
// knows, with the payload its type needs.
func Decode(body []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(body, &m); err != nil {
		return Message{}, fmt.Errorf("control message is not JSON: %w", err)
	}
	switch m.Type {
	case StartReplay:
		if _, err := m.Replay(); err != nil {
			return Message{}, err
		}
	case Release:
		if _, err := m.ReleaseOf(); err != nil {
			return Message{}, err
		}
	case EndReplay:
	default:
		return Message{}, fmt.Errorf("unknown control message type %q", m.Type)
	}
	return m, nil
}

// Replay returns START_REPLAY's payload.
func (m Message) Replay() (ReplayPayload, error) {
	var p ReplayPayload
	if err := m.decodePayload(&p); err != nil {
		return p, err
	}
	if p.Queue == "" {
		return p, fmt.Errorf("%s payload names no queue", m.Type)
	}
	return p, nil
}

// ReleaseOf returns RELEASE's payload.
func (m Message) ReleaseOf() (ReleasePayload, error) {
	var p ReleasePayload
	if err := m.decodePayload(&p); err != nil {
		return p, err
	}
	if p.ReplyTo == "" || p.Migration == "" {
		return p, fmt.Errorf("%s payload needs replyTo and migration", m.Type)
	}
	return p, nil
}

// decodePayload unmarshals the message's payload into p.
func (m Message) decodePayload(p any) error {
	if len(m.Payload) == 0 {
		return fmt.Errorf("%s without payload", m.Type)
	}
	if err := json.Unmarshal(m.Payload, p); err != nil {
		return fmt.Errorf("%s payload: %w", m.Type, err)
	}
	return nil
}
