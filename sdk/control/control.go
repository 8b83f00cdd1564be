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
}

// NewStartReplay builds a START_REPLAY message for the replay queue.
func NewStartReplay(queue string) Message {
	p, _ := json.Marshal(ReplayPayload{Queue: queue}) // a struct of one string always marshals
	return Message{Type: StartReplay, Payload: p}
}

// NewEndReplay builds an END_REPLAY message.
func NewEndReplay() Message { return Message{Type: EndReplay} }

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
	case EndReplay:
	default:
		return Message{}, fmt.Errorf("unknown control message type %q", m.Type)
	}
	return m, nil
}

// Replay returns START_REPLAY's payload.
func (m Message) Replay() (ReplayPayload, error) {
	var p ReplayPayload
	if len(m.Payload) == 0 {
		return p, fmt.Errorf("%s without payload", m.Type)
	}
	if err := json.Unmarshal(m.Payload, &p); err != nil {
		return p, fmt.Errorf("%s payload: %w", m.Type, err)
	}
	if p.Queue == "" {
		return p, fmt.Errorf("%s payload names no queue", m.Type)
	}
	return p, nil
}
