package rabbitmq

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// A replay queue receives what the workload's queue receives only if it is
// bound everywhere that queue is bound: every exchange that routes to it,
// with every routing key and binding arguments. A route through another
// exchange bound to one of those (exchange-to-exchange) or through an
// alternate or dead-letter exchange ends in one of those bindings too, so
// copying the queue's own bindings copies every route. What cannot be
// copied is a publish through the default exchange, which routes by queue
// name alone.

// mgmtQueueBinding is one binding of /api/queues/{vhost}/{queue}/bindings.
type mgmtQueueBinding struct {
	Source     string          `json:"source"`
	RoutingKey string          `json:"routing_key"`
	Arguments  json.RawMessage `json:"arguments"`
}

// routes lists the bindings that deliver to the workload's queue, the
// default exchange's excepted, with each exchange's type; known is false
// when the management API cannot tell.
func (h *handoff) routes(ctx context.Context) (bs []v1alpha1.Binding, kinds map[string]string, known bool) {
	var raw []mgmtQueueBinding
	if found, err := h.mgmt.get(ctx, &raw, "queues", h.mgmt.vhost, h.stream.Queue, "bindings"); err != nil || !found {
		return nil, nil, false
	}
	kinds = map[string]string{}
	for _, b := range raw {
		if b.Source == "" {
			continue
		}
		if _, ok := kinds[b.Source]; !ok {
			var ex struct {
				Type string `json:"type"`
			}
			if found, err := h.mgmt.get(ctx, &ex, "exchanges", h.mgmt.vhost, b.Source); err != nil || !found {
				return nil, nil, false
			}
			kinds[b.Source] = ex.Type
		}
		bs = append(bs, v1alpha1.Binding{Exchange: b.Source, Queue: h.stream.Queue, RoutingKey: b.RoutingKey,
			Arguments: canonicalArguments(b.Arguments)})
	}
	slices.SortFunc(bs, func(a, b v1alpha1.Binding) int {
		return strings.Compare(a.Exchange+"\x00"+a.RoutingKey+"\x00"+a.Arguments, b.Exchange+"\x00"+b.RoutingKey+"\x00"+b.Arguments)
	})
	return slices.Compact(bs), kinds, true
}

// copyable lists the exchange types that deliver a copy of a message to
// every queue whose binding matches, so that a twin binding duplicates
// the workload's.
var copyable = []string{amqp.ExchangeDirect, amqp.ExchangeTopic, amqp.ExchangeFanout, amqp.ExchangeHeaders}

// checkRoutes says whether every route to the workload's queue can be
// copied to a replay queue.
func checkRoutes(queue string, bs []v1alpha1.Binding, kinds map[string]string) error {
	if len(bs) == 0 {
		return unsupported("queue %q is bound to no exchange: its messages arrive through the default exchange "+
			"(published straight to the queue's name), which a replay queue cannot copy; publish through an exchange bound to %q", queue, queue)
	}
	for _, ex := range slices.Sorted(maps.Keys(kinds)) {
		if !slices.Contains(copyable, kinds[ex]) {
			return unsupported("queue %q is bound to exchange %q of type %q: a replay queue can only duplicate what "+
				"direct, topic, fanout and headers exchanges route", queue, ex, kinds[ex])
		}
	}
	return nil
}

// canonicalArguments is a binding's arguments as compact JSON, "" for none.
func canonicalArguments(raw json.RawMessage) string {
	var m map[string]any
	if len(raw) == 0 || json.Unmarshal(raw, &m) != nil || len(m) == 0 {
		return ""
	}
	b, _ := json.Marshal(m) // sorted keys: one form per set of arguments
	return string(b)
}

// bindingTable turns recorded arguments back into an AMQP table: integral
// numbers as long integers, as the management API itself declares them.
func bindingTable(args string) (amqp.Table, error) {
	if args == "" {
		return nil, nil
	}
	d := json.NewDecoder(bytes.NewReader([]byte(args)))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("binding arguments %s: %w", args, err)
	}
	return amqp.Table(amqpValues(m).(map[string]any)), nil
}

func amqpValues(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		t := amqp.Table{}
		for k, e := range x {
			t[k] = amqpValues(e)
		}
		return map[string]any(t)
	case []any:
		for i := range x {
			x[i] = amqpValues(x[i])
		}
		return x
	}
	return v
}

// describeRoutes names routes for a message.
func describeRoutes(bs []v1alpha1.Binding) string {
	var parts []string
	for _, b := range bs {
		p := fmt.Sprintf("%s/%q", b.Exchange, b.RoutingKey)
		if b.Arguments != "" {
			p += " " + b.Arguments
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}
