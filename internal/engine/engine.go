// Package engine is how a node's agent dumps a container: one Engine per
// technique (the kubelet's checkpoint API, the node's runc run by the agent
// itself), chosen per migration by the controller's plan, never a branch in
// the agent's server.
package engine

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/ms2m/ms2m/internal/agentapi"
)

// Container is the container to dump, as the controller names it.
type Container struct {
	Namespace, Pod, PodUID, Name string
	// ID is the runtime's ID of the container (pod status, no scheme).
	ID string
}

func (c Container) String() string { return c.Namespace + "/" + c.Pod + "/" + c.Name }

// Options shape one dump.
type Options struct {
	// ID names the checkpoint (unique per migration); an engine that
	// writes files names them after it.
	ID string
	// Hold leaves the container frozen after its dump.
	Hold bool
	// LazyPages ships everything but the memory pages a lazy restore can
	// take later (post-copy), and Result.Pages serves those to the
	// target's lazy-pages daemon: from the frozen container, held until
	// they are all taken, or with PagesFromDump from a whole dump, while
	// the container runs on (or is held, as Hold says).
	LazyPages     bool
	PagesFromDump bool
	// PageSink, for a Stream dump: CRIU sends the memory pages, as it
	// dumps them, through it to a page server (the target node's, at the
	// other end), and the archive holds the rest. Result.Streamed counts
	// them.
	PageSink io.ReadWriteCloser
	// Others are more containers of the same pod, dumped in the same cut:
	// all of them are paused before the first is dumped and resumed (or
	// held) after the last, so none sees another's state move on past its
	// checkpoint. Each one's images and file system changes go into the
	// archive under staging.OthersDir/<name>. Neither lazy nor streamed
	// pages.
	Others []Container
}

// Result is a finished dump.
type Result struct {
	// Archive is the checkpoint archive, as a path the agent can open.
	Archive string
	// Freeze is how long the container was stopped for the dump (an
	// upper bound where the engine cannot see CRIU's own figure).
	Freeze time.Duration
	// Held: the container is left frozen, and with it Options.Others (a
	// cut is held, or resumed, whole).
	Held bool
	// Pages serves the memory of a LazyPages dump.
	Pages *PageServer
	// Steps is how long each step of the freeze took, in order; CRIU what
	// CRIU measured of its dump (nil where the engine cannot see it).
	Steps Steps
	CRIU  *DumpStats
	// Streamed is what went through Options.PageSink.
	Streamed int64
}

// Steps times the steps of a dump, for the agent's log: where a freeze
// went is what shortens it.
type Steps []Step

type Step struct {
	Name string
	Took time.Duration
}

// Time runs f as the step name.
func (s *Steps) Time(name string, f func() error) error {
	t := time.Now()
	err := f()
	*s = append(*s, Step{name, time.Since(t)})
	return err
}

func (s Steps) String() string {
	var b []byte
	for i, x := range s {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = fmt.Appendf(b, "%s %s", x.Name, x.Took.Round(time.Millisecond))
	}
	return string(b)
}

// Engine dumps containers on one node.
type Engine interface {
	Name() agentapi.CheckpointEngine
	// Checkpoint dumps c. It refuses a container that is not the one the
	// request names, and on failure leaves it running as it found it.
	Checkpoint(ctx context.Context, c Container, o Options) (Result, error)
	// Release thaws a container (by runtime ID) that a Checkpoint with
	// Hold left frozen. A container that is gone or not frozen is no error.
	Release(ctx context.Context, containerID string) error
	// Kill ends a container that a Checkpoint with Hold left frozen,
	// without thawing it first (thawed, it would run on past its dump),
	// and returns once it has stopped. A container that is gone or
	// stopped is no error.
	Kill(ctx context.Context, containerID string) error
}

// Discarder is an engine that keeps a checkpoint's files past Checkpoint
// (a dump whose pages it serves): Discard removes what it still keeps of
// checkpoint id, for a cleanup that comes after the agent serving them
// died. Nothing kept is no error.
type Discarder interface {
	Discard(id string) error
}

// ErrUnsupported: the engine cannot do what was asked.
type ErrUnsupported struct{ Engine, What string }

func (e ErrUnsupported) Error() string {
	return fmt.Sprintf("checkpoint engine %s cannot %s", e.Engine, e.What)
}

// Identity is what the runtime recorded about a container: the CRI
// annotations it carries.
type Identity struct {
	Namespace, Pod, PodUID, Name, Type string
}

// Runtime annotations the CRI puts on a container (containerd and CRI-O
// alike set the io.kubernetes.cri.* ones through containerd's CRI plugin;
// CRI-O's own keys are io.kubernetes.pod.* / io.kubernetes.container.name).
func identityFrom(a map[string]string) Identity {
	first := func(keys ...string) string {
		for _, k := range keys {
			if v := a[k]; v != "" {
				return v
			}
		}
		return ""
	}
	return Identity{
		Namespace: first("io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"),
		Pod:       first("io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"),
		PodUID:    first("io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"),
		Name:      first("io.kubernetes.cri.container-name", "io.kubernetes.container.name"),
		Type:      first("io.kubernetes.cri.container-type"),
	}
}

// CheckIdentity refuses to touch a runtime container that is not the one
// requested: an ID in a request is only a claim, and a checkpoint is the
// container's whole memory.
func CheckIdentity(want Container, got Identity) error {
	if got.Type != "" && got.Type != "container" {
		return fmt.Errorf("runtime container %s is a %s, not the container %s", want.ID, got.Type, want)
	}
	mismatch := func(what, w, g string) error {
		return fmt.Errorf("runtime container %s belongs to %s/%s/%s (pod UID %s), not to %s: its %s is %q, the request names %q",
			want.ID, got.Namespace, got.Pod, got.Name, got.PodUID, want, what, g, w)
	}
	switch {
	case got.Namespace != want.Namespace:
		return mismatch("namespace", want.Namespace, got.Namespace)
	case got.Pod != want.Pod:
		return mismatch("pod", want.Pod, got.Pod)
	case got.Name != want.Name:
		return mismatch("container name", want.Name, got.Name)
	case want.PodUID != "" && got.PodUID != want.PodUID:
		return mismatch("pod UID", want.PodUID, got.PodUID)
	}
	return nil
}
