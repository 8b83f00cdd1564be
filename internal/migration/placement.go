package migration

import (
	"fmt"
	"sort"
	"strings"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

// NodeCandidate is a node as the placement decision sees it.
type NodeCandidate struct {
	Node *corev1.Node
	// AgentReady is whether the node's ms2m agent answered.
	AgentReady bool
	// Pods is how many pods run there (fewer is preferred).
	Pods int
}

// Placement is the chosen target node, or why there is none.
type Placement struct {
	Node string
	// Reason explains the choice (status.targetNodeReason) or the refusal.
	Reason string
	// FailReason is a v1alpha1 reason when no node fits.
	FailReason string
}

// CheckTargetNode validates a requested target node. An explicit target
// is held to what the scheduler would hold the pod to (cordon, taints,
// nodeSelector) unless override, the cluster admin's setting, says
// otherwise: naming a node is no way around its cordon.
func CheckTargetNode(pod *corev1.Pod, requested string, node *corev1.Node, agentReady, override bool) Placement {
	sourceNode := pod.Spec.NodeName
	unschedulable := ""
	if node != nil {
		unschedulable = whyUnschedulable(pod, node)
	}
	switch {
	case requested == sourceNode:
		return Placement{FailReason: v1alpha1.ReasonTargetIsSource,
			Reason: fmt.Sprintf("targetNode %q is the node the pod already runs on; pick another node or leave targetNode empty", requested)}
	case node == nil:
		return Placement{FailReason: v1alpha1.ReasonTargetNodeNotFound,
			Reason: fmt.Sprintf("targetNode %q does not exist", requested)}
	case !NodeReady(node):
		return Placement{FailReason: v1alpha1.ReasonTargetNodeNotReady,
			Reason: fmt.Sprintf("targetNode %q is not Ready", requested)}
	case !agentReady:
		return Placement{FailReason: v1alpha1.ReasonAgentUnavailable,
			Reason: fmt.Sprintf("targetNode %q has no ready ms2m agent", requested)}
	case unschedulable != "" && !override:
		return Placement{FailReason: v1alpha1.ReasonTargetNodeUnschedulable,
			Reason: fmt.Sprintf("targetNode %q %s; pick another node, or leave targetNode empty to let ms2m choose (a cluster admin may let explicit targets override this: the manager's --explicit-target-overrides-scheduling)", requested, unschedulable)}
	case unschedulable != "":
		return Placement{Node: requested, Reason: fmt.Sprintf("set in spec.targetNode, although it %s (the manager lets explicit targets override that)", unschedulable)}
	}
	return Placement{Node: requested, Reason: "set in spec.targetNode"}
}

// whyUnschedulable says why the scheduler would not place pod on n, or "".
func whyUnschedulable(pod *corev1.Pod, n *corev1.Node) string {
	switch {
	case n.Spec.Unschedulable:
		return "is cordoned"
	case !toleratesAll(pod, n.Spec.Taints):
		return "has a taint the pod does not tolerate"
	case !matchesSelector(pod.Spec.NodeSelector, n.Labels):
		return "does not match the pod's nodeSelector"
	}
	return ""
}

// ChooseTargetNode picks a node for a migration without spec.targetNode:
// Ready, schedulable, not the source, with a ready agent, whose taints the
// pod tolerates and whose labels match the pod's nodeSelector; among those
// the one with the fewest pods (ties: by name, so the choice is stable).
func ChooseTargetNode(pod *corev1.Pod, sourceNode string, nodes []NodeCandidate) Placement {
	var fits []NodeCandidate
	var rejected []string
	for _, c := range nodes {
		n := c.Node
		why := ""
		switch {
		case n.Name == sourceNode:
			continue
		case !NodeReady(n):
			why = "not Ready"
		case !c.AgentReady:
			why = "no ready ms2m agent"
		default:
			why = whyUnschedulable(pod, n)
		}
		if why != "" {
			rejected = append(rejected, n.Name+": "+why)
			continue
		}
		fits = append(fits, c)
	}
	if len(fits) == 0 {
		msg := "no node other than " + sourceNode + " can take the pod"
		if len(rejected) > 0 {
			sort.Strings(rejected)
			msg += " (" + strings.Join(rejected, "; ") + ")"
		}
		return Placement{FailReason: v1alpha1.ReasonNoTargetNode, Reason: msg}
	}
	sort.Slice(fits, func(i, j int) bool {
		if fits[i].Pods != fits[j].Pods {
			return fits[i].Pods < fits[j].Pods
		}
		return fits[i].Node.Name < fits[j].Node.Name
	})
	best := fits[0]
	return Placement{Node: best.Node.Name,
		Reason: fmt.Sprintf("chosen automatically: Ready, schedulable, agent ready, fewest pods (%d) of %d candidate(s)", best.Pods, len(fits))}
}

// NodeReady reports the node's Ready condition.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func toleratesAll(pod *corev1.Pod, taints []corev1.Taint) bool {
	for i := range taints {
		t := &taints[i]
		if t.Effect == corev1.TaintEffectPreferNoSchedule {
			continue
		}
		ok := false
		for j := range pod.Spec.Tolerations {
			if pod.Spec.Tolerations[j].ToleratesTaint(logr.Discard(), t, false) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// matchesSelector ignores the hostname label: it pins the source to its
// node, which the migration is to change.
func matchesSelector(sel, labels map[string]string) bool {
	for k, v := range sel {
		if k != corev1.LabelHostname && labels[k] != v {
			return false
		}
	}
	return true
}
