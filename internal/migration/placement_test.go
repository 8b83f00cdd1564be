package migration

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

func node(name string, ready bool, mods ...func(*corev1.Node)) *corev1.Node {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}}}}
	for _, m := range mods {
		m(n)
	}
	return n
}

func TestChooseTargetNode(t *testing.T) {
	pod := &corev1.Pod{}
	tainted := func(n *corev1.Node) {
		n.Spec.Taints = []corev1.Taint{{Key: "dedicated", Value: "db", Effect: corev1.TaintEffectNoSchedule}}
	}
	cordoned := func(n *corev1.Node) { n.Spec.Unschedulable = true }
	nodes := []NodeCandidate{
		{Node: node("a", true), AgentReady: true, Pods: 0},
		{Node: node("b", true), AgentReady: true, Pods: 5},
		{Node: node("c", true), AgentReady: true, Pods: 2},
		{Node: node("d", false), AgentReady: true},
		{Node: node("e", true, cordoned), AgentReady: true},
		{Node: node("f", true, tainted), AgentReady: true},
		{Node: node("g", true), AgentReady: false},
	}
	p := ChooseTargetNode(pod, "a", nodes)
	if p.Node != "c" || p.FailReason != "" {
		t.Fatalf("want c (fewest pods, not the source), got %+v", p)
	}
	pod.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "db", Effect: corev1.TaintEffectNoSchedule}}
	nodes[5].Pods = 1
	if p := ChooseTargetNode(pod, "a", nodes); p.Node != "f" {
		t.Fatalf("tolerated taint: want f, got %+v", p)
	}
	pod.Spec.NodeSelector = map[string]string{"zone": "edge"}
	p = ChooseTargetNode(pod, "a", nodes)
	if p.FailReason != v1alpha1.ReasonNoTargetNode || !strings.Contains(p.Reason, "nodeSelector") || !strings.Contains(p.Reason, "cordoned") {
		t.Fatalf("want a refusal that explains each node, got %+v", p)
	}
}

func TestCheckTargetNode(t *testing.T) {
	cordoned := func(n *corev1.Node) { n.Spec.Unschedulable = true }
	tainted := func(n *corev1.Node) {
		n.Spec.Taints = []corev1.Taint{{Key: "dedicated", Value: "db", Effect: corev1.TaintEffectNoSchedule}}
	}
	elsewhere := func(n *corev1.Node) { n.Labels["zone"] = "b" }
	pod := func(src string) *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{NodeName: src, NodeSelector: map[string]string{"zone": "a", corev1.LabelHostname: src}}}
	}
	zoneA := func(n *corev1.Node) { n.Labels["zone"] = "a" }
	for _, tc := range []struct {
		req, src string
		n        *corev1.Node
		agent    bool
		override bool
		want     string
		says     string
	}{
		{"a", "a", node("a", true, zoneA), true, false, v1alpha1.ReasonTargetIsSource, "already runs on"},
		{"x", "a", nil, true, false, v1alpha1.ReasonTargetNodeNotFound, "does not exist"},
		{"b", "a", node("b", false, zoneA), true, false, v1alpha1.ReasonTargetNodeNotReady, "not Ready"},
		{"b", "a", node("b", true, zoneA), false, false, v1alpha1.ReasonAgentUnavailable, "agent"},
		{"b", "a", node("b", true, zoneA), true, false, "", "set in spec.targetNode"},
		{"b", "a", node("b", true, zoneA, cordoned), true, false, v1alpha1.ReasonTargetNodeUnschedulable, "is cordoned"},
		{"b", "a", node("b", true, zoneA, tainted), true, false, v1alpha1.ReasonTargetNodeUnschedulable, "taint"},
		{"b", "a", node("b", true, elsewhere), true, false, v1alpha1.ReasonTargetNodeUnschedulable, "nodeSelector"},
		{"b", "a", node("b", true, zoneA, cordoned), true, true, "", "although it is cordoned"},
	} {
		p := CheckTargetNode(pod(tc.src), tc.req, tc.n, tc.agent, tc.override)
		if p.FailReason != tc.want || !strings.Contains(p.Reason, tc.says) {
			t.Errorf("CheckTargetNode(%s from %s, override %v) = %+v, want %q saying %q", tc.req, tc.src, tc.override, p, tc.want, tc.says)
		}
		if (p.FailReason == "") != (p.Node == tc.req) {
			t.Errorf("CheckTargetNode(%s from %s): node %q with failure %q", tc.req, tc.src, p.Node, p.FailReason)
		}
	}
}
