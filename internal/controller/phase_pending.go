package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/agentapi"
	"github.com/ms2m/ms2m/internal/broker"
	"github.com/ms2m/ms2m/internal/ckptcrypt"
	"github.com/ms2m/ms2m/internal/migration"
	"github.com/ms2m/ms2m/internal/policy"
)

// reconcilePending checks that the migration can happen and resolves
// everything the spec leaves open (container, strategy, target node,
// transfer mode), changing nothing yet: a failure here leaves nothing
// behind.
func (r *Reconciler) reconcilePending(ctx context.Context, s *scope) (reconcile.Result, error) {
	m, st := s.m, &s.m.Status
	pod, err := r.sourcePod(ctx, m)
	if apierrors.IsNotFound(err) {
		return s.fail(v1alpha1.ReasonSourcePodNotFound, "source pod %q not found in namespace %q", m.Spec.SourcePod, m.Namespace)
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	if pod.Status.Phase != corev1.PodRunning || pod.Spec.NodeName == "" || !pod.DeletionTimestamp.IsZero() {
		return s.fail(v1alpha1.ReasonSourcePodNotRunning, "source pod %q is %s, not Running: only a running pod can be checkpointed", pod.Name, podState(pod))
	}
	earlier, err := r.earlierMigration(ctx, m, pod)
	if err != nil {
		return reconcile.Result{}, err
	}
	if earlier != "" {
		return s.fail(v1alpha1.ReasonConcurrentMigration, "%s", earlier)
	}
	container, err := pickContainer(pod, m.Spec.ContainerName)
	if err != nil {
		return s.fail(err.(*reasonError).reason, "%s", err.Error())
	}
	var pol *v1alpha1.MigrationPolicy
	if !isSwap(m) {
		var invalid string
		if pol, invalid, err = policy.Governing(ctx, r.APIReader, pod); err != nil {
			return reconcile.Result{}, err
		}
		if invalid != "" {
			return s.fail(v1alpha1.ReasonNotAllowedByPolicy, "%s", invalid)
		}
	}
	// The spec with the policy's defaults where it is silent: everything
	// below resolves from it.
	spec := policy.ApplyDefaults(&m.Spec, pol)
	wl, err := r.workloadOf(ctx, pod)
	if err != nil {
		return reconcile.Result{}, err
	}
	strategy, _ := migration.ResolveStrategy(spec, wl.Kind) // for the workload check; the plan resolves it again
	if ok, msg := migration.CheckWorkload(wl.Kind, strategy, spec.EffectiveIdentitySwapMode(), ordinal(pod), int(ptrOr(wl.Replicas))); !ok {
		return s.fail(v1alpha1.ReasonUnsupported, "pod %q of %s %q: %s", pod.Name, wl.Kind, wl.Name, msg)
	}

	placement, err := r.place(ctx, m, pod)
	if err != nil {
		return reconcile.Result{}, err
	}
	if placement.FailReason != "" {
		return s.fail(placement.FailReason, "%s", placement.Reason)
	}
	in := migration.PlanInputs{Spec: spec, OwnerKind: wl.Kind, SwapLeg: isSwap(m),
		Source: pod.Spec.NodeName, Target: placement.Node, SourceRuntimeClass: ptrOr(pod.Spec.RuntimeClassName),
		Repository: r.Options.DefaultCheckpointRepository, Broker: s.hasBroker(),
		Policy: pol, MemoryBytes: memoryOf(pod, container), Container: container,
		CanEncrypt: len(r.Options.CheckpointSecret) >= ckptcrypt.KeySize}
	in.InitContainers, in.Sidecars, in.OtherContainers = otherContainers(pod, container)
	if in.TargetAgent, err = r.Agents.Ready(ctx, placement.Node); err != nil {
		return s.fail(v1alpha1.ReasonAgentUnavailable, "target node %s: %v", placement.Node, err)
	}
	if in.RuntimeClass, err = r.runtimeClassFor(ctx, in.TargetAgent.Restore); err != nil {
		return reconcile.Result{}, err
	}
	if in.SourceAgent, err = r.Agents.Ready(ctx, pod.Spec.NodeName); err != nil {
		return s.fail(v1alpha1.ReasonAgentUnavailable, "source node %s: %v", pod.Spec.NodeName, err)
	}
	if spec.EffectiveTransferMode() == v1alpha1.TransferRegistry {
		if why := r.Options.destinations().CheckRepository(spec.CheckpointImageRepository); why != "" {
			return s.fail(v1alpha1.ReasonNotAllowed, "%s", why)
		}
	}
	if s.hasBroker() {
		c := m.Spec.MessageQueueConfig
		if why := r.Options.destinations().CheckBroker(c.BrokerURL, c.ManagementURL); why != "" {
			return s.fail(v1alpha1.ReasonNotAllowed, "%s", why)
		}
		q, res, ok, err := r.verifyBroker(ctx, s, pod)
		if !ok {
			return res, err
		}
		in.QueueType = q.Type
		if in.SDK, err = r.sourceHasSDK(ctx, s); err != nil {
			return s.retryOrFail(err, v1alpha1.ReasonBrokerUnreachable)
		}
	}
	plan, refusal := migration.ResolvePlan(in)
	if refusal != nil {
		return s.fail(refusal.Reason, "%s", refusal.Message)
	}
	if res, admitted, err := r.admit(ctx, s, pol, pod.Spec.NodeName, placement.Node); !admitted {
		return res, err
	}

	st.SourceNode, st.SourceUID, st.ContainerName, st.Workload = pod.Spec.NodeName, pod.UID, container, &wl
	st.TargetNode, st.TargetNodeReason = placement.Node, placement.Reason
	st.Plan = plan
	st.TargetPod = migration.TargetPodName(pod.Name, plan.Strategy)
	if isSwap(m) {
		st.TargetPod = m.Annotations[AnnotationSwapPod]
	}
	s.event(corev1.EventTypeNormal, v1alpha1.ReasonStarted, "Start", "migrating %s from %s to %s (%s, %s transfer)", pod.Name, st.SourceNode, st.TargetNode, plan.Strategy, plan.TransferMode)
	s.enter(v1alpha1.PhaseCheckpointing)
	return next(), nil
}

// verifyBroker checks the stream before anything is changed. An unreachable
// broker is retried for Options.BrokerRetryWindow (counted from the
// migration's creation), then fails the migration.
func (r *Reconciler) verifyBroker(ctx context.Context, s *scope, pod *corev1.Pod) (broker.QueueStats, reconcile.Result, bool, error) {
	c := s.m.Spec.MessageQueueConfig
	if c.BrokerURLHasPassword() {
		if !s.isDone(v1alpha1.ConditionCredentialsInSpec) {
			s.event(corev1.EventTypeWarning, v1alpha1.ConditionCredentialsInSpec, "Validate",
				"brokerUrl carries a password; put credentials in a Secret and name it in messageQueueConfig.credentialsSecretRef")
		}
		s.condition(v1alpha1.ConditionCredentialsInSpec, metav1.ConditionTrue, v1alpha1.ReasonAtLeastOnceWorkload,
			"brokerUrl carries a password: anyone who can read this StatefulMigration can read it; use credentialsSecretRef")
	}
	h, err := s.brokerSession(ctx)
	var q broker.QueueStats
	if err == nil {
		q, err = h.Verify(ctx)
	}
	if err == nil {
		if why := notConsuming(q, pod, c.QueueName); why != "" {
			res, ferr := s.fail(v1alpha1.ReasonSourceNotConsuming, "%s", why)
			return q, res, false, ferr
		}
		return q, reconcile.Result{}, true, nil
	}
	reason := broker.ReasonOf(err)
	if broker.IsRetryable(err) && s.now.Sub(s.m.CreationTimestamp.Time) < r.Options.BrokerRetryWindow {
		s.condition(v1alpha1.ConditionProgressing, metav1.ConditionUnknown, reason,
			fmt.Sprintf("waiting for the broker at %s: %v", c.RedactedBrokerURL(), err))
		return q, s.poll(), false, nil
	}
	res, ferr := s.fail(reason, "broker at %s: %v", c.RedactedBrokerURL(), err)
	return q, res, false, ferr
}

// sourceHasSDK: the source consumes its namespaced control queue, as the
// ms2m SDK does (recorded for the handoff, as the source reads it now).
func (r *Reconciler) sourceHasSDK(ctx context.Context, s *scope) (bool, error) {
	h, err := s.brokerSession(ctx)
	if err != nil {
		return false, err
	}
	if err := noteSourceControlQueue(ctx, s, h); err != nil {
		return false, err
	}
	return s.sourceHasSDK(), nil
}

// sourcePod fetches the source. Once the migration has started, a pod
// that has taken the source's name since (its successor, a replacement its
// owner made, another migration's target) is not it: the source is gone,
// and nothing acts on that pod as the source.
func (r *Reconciler) sourcePod(ctx context.Context, m *v1alpha1.StatefulMigration) (*corev1.Pod, error) {
	pod := &corev1.Pod{}
	err := r.Get(ctx, client.ObjectKey{Namespace: m.Namespace, Name: m.Spec.SourcePod}, pod)
	if err == nil && m.Status.SourceUID != "" && pod.UID != m.Status.SourceUID {
		return pod, apierrors.NewNotFound(corev1.Resource("pods"), m.Spec.SourcePod)
	}
	return pod, err
}

// repository is where a Registry transfer pushes: what the plan resolved
// (a plan resolved before it recorded one: the spec's, else the manager's).
func (r *Reconciler) repository(m *v1alpha1.StatefulMigration) string {
	if m.Status.Plan.CheckpointRepository != "" {
		return m.Status.Plan.CheckpointRepository
	}
	if m.Spec.CheckpointImageRepository != "" {
		return m.Spec.CheckpointImageRepository
	}
	return r.Options.DefaultCheckpointRepository
}

// replayCutoff is when a Cutoff replay ends, as the plan resolved it.
func replayCutoff(m *v1alpha1.StatefulMigration) time.Duration {
	if s := m.Status.Plan.ReplayCutoffSeconds; s > 0 {
		return time.Duration(s) * time.Second
	}
	return m.Spec.ReplayCutoff()
}

// timeoutsOf is the time budgets the migration runs under, as its plan
// resolved them.
func timeoutsOf(m *v1alpha1.StatefulMigration) *v1alpha1.MigrationTimeouts {
	if m.Status.Plan.Timeouts != nil {
		return m.Status.Plan.Timeouts.DeepCopy()
	}
	return m.Spec.Timeouts.DeepCopy()
}

// place validates spec.targetNode or chooses a node.
func (r *Reconciler) place(ctx context.Context, m *v1alpha1.StatefulMigration, pod *corev1.Pod) (migration.Placement, error) {
	if isSwap(m) {
		return migration.Placement{Node: pod.Spec.NodeName, Reason: "identity swap of " + m.Annotations[AnnotationSwapFor] + ": same node, new name"}, nil
	}
	if m.Spec.TargetNode != "" {
		n := &corev1.Node{}
		err := r.Get(ctx, client.ObjectKey{Name: m.Spec.TargetNode}, n)
		if apierrors.IsNotFound(err) {
			return migration.CheckTargetNode(pod, m.Spec.TargetNode, nil, false, false), nil
		}
		if err != nil {
			return migration.Placement{}, err
		}
		ready := m.Spec.TargetNode != pod.Spec.NodeName && migration.NodeReady(n) && r.agentReady(ctx, n.Name)
		return migration.CheckTargetNode(pod, m.Spec.TargetNode, n, ready, r.Options.ExplicitTargetOverridesScheduling), nil
	}
	nodes := &corev1.NodeList{}
	if err := r.List(ctx, nodes); err != nil {
		return migration.Placement{}, err
	}
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods); err != nil {
		return migration.Placement{}, err
	}
	perNode := map[string]int{}
	for i := range pods.Items {
		perNode[pods.Items[i].Spec.NodeName]++
	}
	var cands []migration.NodeCandidate
	for i := range nodes.Items {
		n := &nodes.Items[i]
		agent := n.Name != pod.Spec.NodeName && migration.NodeReady(n) && r.agentReady(ctx, n.Name)
		cands = append(cands, migration.NodeCandidate{Node: n, AgentReady: agent, Pods: perNode[n.Name]})
	}
	return migration.ChooseTargetNode(pod, pod.Spec.NodeName, cands), nil
}

func (r *Reconciler) agentReady(ctx context.Context, node string) bool {
	_, err := r.Agents.Ready(ctx, node)
	return err == nil
}

// runtimeClassFor is the name of the cluster's RuntimeClass of ms2m's
// runtime handler as the target's agent reports it: "" when there is none,
// or when it names another handler than the node's.
func (r *Reconciler) runtimeClassFor(ctx context.Context, caps agentapi.RestoreCapabilities) (string, error) {
	rc := &nodev1.RuntimeClass{}
	switch err := r.Get(ctx, client.ObjectKey{Name: r.Options.RuntimeClass}, rc); {
	case apierrors.IsNotFound(err):
		return "", nil
	case err != nil:
		return "", err
	case caps.RuntimeHandler != "" && rc.Handler != caps.RuntimeHandler:
		return "", nil
	}
	return rc.Name, nil
}

type reasonError struct {
	reason string
	msg    string
}

func (e *reasonError) Error() string { return e.msg }

// pickContainer resolves the container to checkpoint.
func pickContainer(pod *corev1.Pod, want string) (string, error) {
	var names []string
	for _, c := range pod.Spec.Containers {
		if c.Name == want {
			return want, nil
		}
		names = append(names, c.Name)
	}
	if want != "" {
		return "", &reasonError{v1alpha1.ReasonContainerNotFound,
			fmt.Sprintf("pod %q has no container %q (it has: %s)", pod.Name, want, strings.Join(names, ", "))}
	}
	if len(names) == 1 {
		return names[0], nil
	}
	return "", &reasonError{v1alpha1.ReasonContainerAmbiguous,
		fmt.Sprintf("pod %q has %d containers (%s): set spec.containerName to the one whose memory moves (ms2m moves one container's memory; the others start fresh on the target)",
			pod.Name, len(names), strings.Join(names, ", "))}
}

func podState(p *corev1.Pod) string {
	switch {
	case !p.DeletionTimestamp.IsZero():
		return "terminating"
	case p.Spec.NodeName == "":
		return "not scheduled"
	}
	return string(p.Status.Phase)
}

// notConsuming says why the source pod does not consume queue, from what
// the broker reports: no consumer at all, or (where the broker names its
// consumers' addresses) none from the pod's address. "" when it may.
func notConsuming(q broker.QueueStats, pod *corev1.Pod, queue string) string {
	if q.Consumers == 0 {
		return fmt.Sprintf("queue %q has no consumer: source pod %s does not consume it (is messageQueueConfig.queueName the queue the workload reads?)", queue, pod.Name)
	}
	addrs := podAddresses(pod)
	if q.ConsumerPeers == nil || len(addrs) == 0 {
		return ""
	}
	for _, a := range addrs {
		if slices.Contains(q.ConsumerPeers, a) {
			return ""
		}
	}
	return fmt.Sprintf("no consumer of queue %q connects from source pod %s (%s); its consumers connect from %s (is messageQueueConfig.queueName the queue the workload reads?)",
		queue, pod.Name, strings.Join(addrs, ", "), strings.Join(q.ConsumerPeers, ", "))
}

// podAddresses are the addresses a pod's connections come from.
func podAddresses(p *corev1.Pod) []string {
	var out []string
	for _, ip := range p.Status.PodIPs {
		out = append(out, ip.IP)
	}
	if len(out) == 0 && p.Status.PodIP != "" {
		out = append(out, p.Status.PodIP)
	}
	if p.Spec.HostNetwork && p.Status.HostIP != "" {
		out = append(out, p.Status.HostIP)
	}
	return out
}

// otherContainers lists the pod's containers besides the migrated one:
// the init containers that run to completion, the native sidecars
// (restartable init containers), and the other regular containers.
func otherContainers(pod *corev1.Pod, container string) (inits, sidecars, others []string) {
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sidecars = append(sidecars, c.Name)
		} else {
			inits = append(inits, c.Name)
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name != container {
			others = append(others, c.Name)
		}
	}
	return inits, sidecars, others
}
