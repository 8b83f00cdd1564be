package migration

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ms2m/ms2m/api/v1alpha1"
)

func withPolicy(f func(*v1alpha1.MigrationPolicySpec)) func(*PlanInputs) {
	return func(i *PlanInputs) {
		p := &v1alpha1.MigrationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "tenants", Generation: 3}}
		f(&p.Spec)
		i.Policy = p
	}
}

func TestPlanUnderPolicy(t *testing.T) {
	brokered := func(i *PlanInputs) {
		i.Spec.MessageQueueConfig = &v1alpha1.MessageQueueConfig{QueueName: "q", BrokerURL: "amqp://u:secret@rabbit.shop:5672/", ManagementURL: "http://rabbit.shop:15672"}
	}
	cases := []struct {
		name    string
		in      PlanInputs
		refused string // part of the refusal's message; "" when admitted
	}{
		{"everything allowed", planInputs(withPolicy(func(s *v1alpha1.MigrationPolicySpec) {})), ""},
		{"a memory technique the policy leaves out",
			planInputs(func(i *PlanInputs) {
				i.Spec.MemoryTechnique = v1alpha1.MemoryPostCopy
				withPolicy(func(s *v1alpha1.MigrationPolicySpec) {
					s.Allowed = &v1alpha1.MigrationAllowances{MemoryTechniques: []v1alpha1.MemoryTechnique{v1alpha1.MemoryStopAndCopy}}
				})(i)
			}),
			"MigrationPolicy tenants allows memory techniques [StopAndCopy] only; this migration's plan has PostCopy"},
		{"Auto resolving to an allowed technique",
			planInputs(withPolicy(func(s *v1alpha1.MigrationPolicySpec) {
				s.Allowed = &v1alpha1.MigrationAllowances{MemoryTechniques: []v1alpha1.MemoryTechnique{v1alpha1.MemoryStopAndCopy}}
			})), ""},
		{"a strategy the policy leaves out",
			planInputs(withPolicy(func(s *v1alpha1.MigrationPolicySpec) {
				s.Allowed = &v1alpha1.MigrationAllowances{Strategies: []v1alpha1.MigrationStrategy{v1alpha1.StrategySequential}}
			})), "set spec.migrationStrategy"},
		{"a registry outside the policy's",
			planInputs(withPolicy(func(s *v1alpha1.MigrationPolicySpec) {
				s.Allowed = &v1alpha1.MigrationAllowances{CheckpointRegistries: []string{"vault.example:5000"}}
			})), "lets checkpoints be pushed to vault.example:5000 only, not to registry:5000/ckpt"},
		{"the policy's registry",
			planInputs(withPolicy(func(s *v1alpha1.MigrationPolicySpec) {
				s.Allowed = &v1alpha1.MigrationAllowances{CheckpointRegistries: []string{"registry:5000"}}
			})), ""},
		{"a registry list does not bind a Direct transfer",
			planInputs(func(i *PlanInputs) {
				i.Spec.TransferMode = v1alpha1.TransferDirect
				withPolicy(func(s *v1alpha1.MigrationPolicySpec) {
					s.Allowed = &v1alpha1.MigrationAllowances{CheckpointRegistries: []string{"vault.example:5000"}}
				})(i)
			}), ""},
		{"a broker outside the policy's, its password never said",
			planInputs(func(i *PlanInputs) {
				brokered(i)
				withPolicy(func(s *v1alpha1.MigrationPolicySpec) {
					s.Allowed = &v1alpha1.MigrationAllowances{BrokerHosts: []string{"rabbit.ops"}}
				})(i)
			}), `not "rabbit.shop:5672"`},
		{"the policy's broker",
			planInputs(func(i *PlanInputs) {
				brokered(i)
				withPolicy(func(s *v1alpha1.MigrationPolicySpec) {
					s.Allowed = &v1alpha1.MigrationAllowances{BrokerHosts: []string{"rabbit.shop"}}
				})(i)
			}), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			plan, refusal := ResolvePlan(c.in)
			if c.refused == "" {
				if refusal != nil {
					t.Fatalf("refused: %s", refusal.Message)
				}
				if plan.Policy != "tenants" || plan.PolicyGeneration != 3 {
					t.Fatalf("the plan does not record its policy: %q/%d", plan.Policy, plan.PolicyGeneration)
				}
				return
			}
			if refusal == nil || refusal.Reason != v1alpha1.ReasonNotAllowedByPolicy || !strings.Contains(refusal.Message, c.refused) {
				t.Fatalf("refusal = %+v; want %s saying %q", refusal, v1alpha1.ReasonNotAllowedByPolicy, c.refused)
			}
			if strings.Contains(refusal.Message, "secret") {
				t.Fatalf("the refusal shows the broker password: %s", refusal.Message)
			}
		})
	}
}

func TestResolveTimeouts(t *testing.T) {
	perGiB := func(d time.Duration) *v1alpha1.MigrationPolicy {
		return &v1alpha1.MigrationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"},
			Spec: v1alpha1.MigrationPolicySpec{Limits: &v1alpha1.MigrationLimits{CompletionTimeoutPerGiB: &metav1.Duration{Duration: d}}}}
	}
	spec := &v1alpha1.StatefulMigrationSpec{Timeouts: &v1alpha1.MigrationTimeouts{Restore: &metav1.Duration{Duration: 7 * time.Second}}}
	t.Run("ms2m's defaults beside the spec's", func(t *testing.T) {
		got, _ := ResolveTimeouts(spec, nil, 0)
		if got.Total.Duration != v1alpha1.DefaultTotalTimeout || got.Restore.Duration != 7*time.Second || got.Finalize.Duration != v1alpha1.DefaultFinalizeTimeout {
			t.Fatalf("%+v", got)
		}
	})
	t.Run("per GiB, rounded up", func(t *testing.T) {
		got, why := ResolveTimeouts(spec, perGiB(150*time.Second), 1536<<20)
		if got.Total.Duration != 300*time.Second || !strings.Contains(why, "2m30s per GiB of the container's 2 GiB") {
			t.Fatalf("%s: %s", got.Total.Duration, why)
		}
	})
	t.Run("per GiB never lengthens the total", func(t *testing.T) {
		got, _ := ResolveTimeouts(spec, perGiB(time.Hour), 1<<30)
		if got.Total.Duration != v1alpha1.DefaultTotalTimeout {
			t.Fatalf("%s", got.Total.Duration)
		}
	})
	t.Run("without a memory limit it says it does not apply", func(t *testing.T) {
		got, why := ResolveTimeouts(spec, perGiB(time.Minute), 0)
		if got.Total.Duration != v1alpha1.DefaultTotalTimeout || !strings.Contains(why, "does not apply") {
			t.Fatalf("%s: %s", got.Total.Duration, why)
		}
	})
}

// A plan's timeouts, not the spec's, bound the migration once resolved.
func TestOverrunReadsThePlansTimeouts(t *testing.T) {
	start := metav1.NewTime(time.Unix(1000, 0))
	st := &v1alpha1.StatefulMigrationStatus{StartTime: &start,
		Plan: v1alpha1.MigrationPlan{Timeouts: &v1alpha1.MigrationTimeouts{Total: &metav1.Duration{Duration: time.Minute}}}}
	if over, msg := Overrun(&v1alpha1.StatefulMigrationSpec{}, st, start.Add(2*time.Minute)); !over {
		t.Fatalf("not overrun after 2m of a 1m plan: %s", msg)
	}
	st.Plan.Timeouts = nil
	if over, _ := Overrun(&v1alpha1.StatefulMigrationSpec{}, st, start.Add(2*time.Minute)); over {
		t.Fatal("without a plan's timeouts the spec's default (20m) holds")
	}
}

func TestResolveContainers(t *testing.T) {
	cut := ContainerInputs{Container: "app", Engine: v1alpha1.CheckpointEngineRunc, Restore: v1alpha1.RestoreRuntimeHandler,
		Memory: v1alpha1.MemoryStopAndCopy, Target: "node-b"}
	with := func(f func(*ContainerInputs)) ContainerInputs { in := cut; f(&in); return in }
	for _, tc := range []struct {
		name                  string
		in                    ContainerInputs
		together, fresh, want string
	}{
		{name: "alone", in: cut, want: "the pod has no container besides app"},
		{name: "checkpointed together by default",
			in: with(func(in *ContainerInputs) {
				in.Inits, in.Sidecars, in.Others = []string{"config"}, []string{"mesh"}, []string{"proxy", "logs"}
			}),
			together: "proxy,logs", fresh: "config,mesh",
			want: "init container(s) config run again on the target; sidecar(s) mesh start fresh there; container(s) proxy, logs are checkpointed with app in one cut and restored with it"},
		{name: "start fresh when asked",
			in:    with(func(in *ContainerInputs) { in.Mode, in.Others = v1alpha1.OtherContainersStartFresh, []string{"proxy"} }),
			fresh: "proxy", want: "container(s) proxy start fresh there, without their memory (otherContainers StartFresh)"},
		{name: "the kubelet's API cannot",
			in:   with(func(in *ContainerInputs) { in.Engine, in.Others = v1alpha1.CheckpointEngineKubelet, []string{"proxy"} }),
			want: "refused: container(s) proxy cannot be checkpointed with app in one cut: only the Runc checkpoint engine pauses several containers"},
		{name: "a checkpoint image restore cannot",
			in:   with(func(in *ContainerInputs) { in.Restore, in.Others = v1alpha1.RestoreCheckpointImage, []string{"proxy"} }),
			want: "refused: container(s) proxy cannot be checkpointed with app in one cut: only ms2m's runtime handler restores several containers from one checkpoint, and node-b restores checkpoint images"},
		{name: "post-copy cannot",
			in:   with(func(in *ContainerInputs) { in.Memory, in.Others = v1alpha1.MemoryPostCopy, []string{"proxy"} }),
			want: "refused: container(s) proxy cannot be checkpointed with app in one cut: memory technique PostCopy moves the pages of one container (use StopAndCopy); set spec.otherContainers: StartFresh"},
		{name: "sidecars alone need no cut",
			in:    with(func(in *ContainerInputs) { in.Memory, in.Sidecars = v1alpha1.MemoryPostCopy, []string{"mesh"} }),
			fresh: "mesh", want: "sidecar(s) mesh start fresh there"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			together, fresh, why, fail := ResolveContainers(tc.in)
			got := why
			if fail != "" {
				got = "refused: " + fail
			}
			if !strings.HasPrefix(got, tc.want) || strings.Join(together, ",") != tc.together || strings.Join(fresh, ",") != tc.fresh {
				t.Errorf("together %v, fresh %v, %q; want together %q, fresh %q, %q...", together, fresh, got, tc.together, tc.fresh, tc.want)
			}
		})
	}
}
