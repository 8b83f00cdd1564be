package v1alpha1_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ms2m/ms2m/internal/testenv"
)

// These tests act as a tenant, a user with only the permissions each test
// grants, against the admission policy in config/admission that every
// install carries: the API server's own authorizer decides.

// tenantNamespace makes a namespace for one test, and a client that acts as
// user there, who may create, update and read StatefulMigrations and
// nothing else until grant adds to it.
func tenantNamespace(t *testing.T, user string) (string, client.Client) {
	t.Helper()
	seq++
	ns := fmt.Sprintf("tenant-%d", seq)
	sch := testenv.Scheme()
	typed, err := client.New(admin, client.Options{Scheme: sch})
	if err != nil {
		t.Fatal(err)
	}
	if err := typed.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	grant(t, ns, user, "migrations", rbacv1.PolicyRule{APIGroups: []string{"migration.ms2m.io"}, Resources: []string{"statefulmigrations"},
		Verbs: []string{"create", "update", "patch", "get", "list"}})
	cfg := rest.CopyConfig(admin)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	c, err := client.New(cfg, client.Options{Scheme: sch})
	if err != nil {
		t.Fatal(err)
	}
	return ns, c
}

// grant gives user the rules in ns, as a namespace admin would.
func grant(t *testing.T, ns, user, name string, rules ...rbacv1.PolicyRule) {
	t.Helper()
	typed, err := client.New(admin, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Rules: rules}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}}}
	for _, o := range []client.Object{role, binding} {
		if err := typed.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// The API server's authorizer sees a new binding a moment later (its
	// RBAC cache), longer on a busy machine: wait until it allows what was
	// granted, so that a test's next step runs with it.
	for _, r := range rules {
		resource, sub, _ := strings.Cut(r.Resources[0], "/")
		attrs := &authorizationv1.ResourceAttributes{Namespace: ns, Verb: r.Verbs[0], Group: r.APIGroups[0], Resource: resource, Subresource: sub}
		if len(r.ResourceNames) > 0 {
			attrs.Name = r.ResourceNames[0]
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, ResourceAttributes: attrs}}
			if err := typed.Create(ctx, sar); err != nil {
				t.Fatal(err)
			}
			if sar.Status.Allowed {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s was granted %v in %s, but the API server does not allow it after 30 s", user, r, ns)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func execOn(pod string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods/exec"}, ResourceNames: []string{pod}, Verbs: []string{"create"}}
}

// migrationIn is the SHADOW manifest in ns, without the identity swap.
func migrationIn(t *testing.T, ns string, mutate func(s map[string]any)) *unstructured.Unstructured {
	t.Helper()
	u := manifest(t, func(s map[string]any) {
		delete(s, "identitySwapMode")
		if mutate != nil {
			mutate(s)
		}
	})
	u.SetNamespace(ns)
	return u
}

// refused creates u as c and returns the API server's refusal. A policy
// takes a moment to reach the API server's admission after it is created,
// so an object admitted meanwhile is removed and tried again; one still
// admitted after 30 s fails the test.
func refused(t *testing.T, c client.Client, u *unstructured.Unstructured) error {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.Create(context.Background(), u.DeepCopy())
		if err != nil {
			return err
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s was admitted", u.GetNamespace(), u.GetName())
		}
		if err := k8s.Delete(context.Background(), u.DeepCopy()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func wantForbidden(t *testing.T, err error, want ...string) {
	t.Helper()
	if !apierrors.IsForbidden(err) {
		t.Fatalf("want Forbidden, got %v", err)
	}
	t.Logf("refused: %v", err)
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the refusal does not say %q:\n%v", w, err)
		}
	}
}

// A tenant allowed to create StatefulMigrations, but not to exec into a
// pod, could read that pod's memory through a checkpoint: refused.
func TestMigratingAPodNeedsExecOnIt(t *testing.T) {
	testenv.NeedsServices(t)
	ns, tenant := tenantNamespace(t, "tenant-exec")
	u := migrationIn(t, ns, nil)
	wantForbidden(t, refused(t, tenant, u), "needs permission to create pods/exec", ns+"/consumer-0", "tenant-exec")

	grant(t, ns, "tenant-exec", "exec-other", execOn("consumer-1"))
	wantForbidden(t, refused(t, tenant, migrationIn(t, ns, nil)), "pods/exec")

	grant(t, ns, "tenant-exec", "exec", execOn("consumer-0"))
	if err := tenant.Create(context.Background(), u); err != nil {
		t.Fatalf("a tenant who may exec into the pod was refused: %v", err)
	}

	// Nor may the pod be swapped for another while the migration waits.
	if err := unstructured.SetNestedField(u.Object, "consumer-2", "spec", "sourcePod"); err != nil {
		t.Fatal(err)
	}
	wantForbidden(t, tenant.Update(context.Background(), u), "needs permission to create pods/exec", ns+"/consumer-2")
}

// Naming a Secret makes the manager send its credentials to the broker the
// migration names: only who may read the Secret may name it.
func TestNamingABrokerSecretNeedsReadingIt(t *testing.T) {
	testenv.NeedsServices(t)
	ns, tenant := tenantNamespace(t, "tenant-secret")
	grant(t, ns, "tenant-secret", "exec", execOn("consumer-0"))
	withSecret := func(s map[string]any) { mq(s)["credentialsSecretRef"] = map[string]any{"name": "db-admin"} }
	wantForbidden(t, refused(t, tenant, migrationIn(t, ns, withSecret)), "Secret "+ns+"/db-admin", "may not read")

	grant(t, ns, "tenant-secret", "read-secret", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"},
		ResourceNames: []string{"db-admin"}, Verbs: []string{"get"}})
	if err := tenant.Create(context.Background(), migrationIn(t, ns, withSecret)); err != nil {
		t.Fatalf("a tenant who may read the Secret was refused: %v", err)
	}
}

// The identity swap's annotations make the manager scale a StatefulSet
// and restore into its pod's name: users may neither set nor change them.
func TestIdentitySwapAnnotationsAreTheManagersOnly(t *testing.T) {
	testenv.NeedsServices(t)
	ns, tenant := tenantNamespace(t, "tenant-annotations")
	grant(t, ns, "tenant-annotations", "exec", execOn("consumer-0"))
	forged := migrationIn(t, ns, nil)
	forged.SetAnnotations(map[string]string{"migration.ms2m.io/identity-swap-statefulset": "billing-db", "migration.ms2m.io/identity-swap-replicas": "0"})
	wantForbidden(t, refused(t, tenant, forged), "identity-swap-* annotations are set only by the ms2m manager", "remove them")

	// An administrator (the manager, in a cluster) may.
	if err := k8s.Create(context.Background(), forged.DeepCopy()); err != nil {
		t.Fatalf("the administrator was refused: %v", err)
	}
	own := &unstructured.Unstructured{}
	own.SetGroupVersionKind(forged.GroupVersionKind())
	if err := tenant.Get(context.Background(), client.ObjectKeyFromObject(forged), own); err != nil {
		t.Fatal(err)
	}
	a := own.GetAnnotations()
	a["migration.ms2m.io/identity-swap-replicas"] = "3"
	own.SetAnnotations(a)
	wantForbidden(t, tenant.Update(context.Background(), own.DeepCopy()), "identity-swap-*")

	// Other annotations stay the user's.
	a["migration.ms2m.io/identity-swap-replicas"] = "0"
	a["team"] = "billing"
	own.SetAnnotations(a)
	if err := tenant.Update(context.Background(), own); err != nil {
		t.Fatalf("changing an annotation of the user's own was refused: %v", err)
	}
}
