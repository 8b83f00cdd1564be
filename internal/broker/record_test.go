package broker

import (
	"testing"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

func TestNotesDoNotRepeat(t *testing.T) {
	var rec v1alpha1.BrokerStatus
	b := v1alpha1.Binding{Exchange: "orders", Queue: "ms2m.replay.m1", RoutingKey: "new"}
	for range 2 {
		NoteDeclaredQueue(&rec, "ms2m.replay.m1")
		NoteAddedBinding(&rec, b)
		NoteRemovedBinding(&rec, b)
	}
	NoteAddedBinding(&rec, v1alpha1.Binding{Exchange: "orders", Queue: "ms2m.replay.m1", RoutingKey: "old"})
	if len(rec.DeclaredQueues) != 1 || len(rec.AddedBindings) != 2 || len(rec.RemovedBindings) != 1 {
		t.Fatalf("record %+v: want 1 queue, 2 added and 1 removed binding", rec)
	}
	rec.ReplayQueue, rec.ControlQueue = "ms2m.replay.m1", "ms2m.control.p"
	TornDown(&rec)
	if rec.DeclaredQueues != nil || rec.AddedBindings != nil || rec.RemovedBindings != nil {
		t.Fatalf("after TornDown the lists remain: %+v", rec)
	}
	if rec.ReplayQueue == "" || rec.ControlQueue == "" {
		t.Fatalf("TornDown forgot the names: %+v", rec)
	}
}
