package sdk

import (
	"errors"
	"fmt"
	"github.com/ms2m/ms2m/sdk/control"
	"io/fs"
	"os"
	"strings"
)

// Identity is the pod a process runs in. A process restored from a
// checkpoint keeps the source's environment and UTS hostname (both live in
// the checkpoint), so identity comes from files the runtime mounts fresh into
// every container: a downward-API volume and /etc/hostname.
type Identity struct {
	// UID is the pod UID; empty when not mounted.
	UID string `json:"uid,omitempty"`
	// Name is the pod name.
	Name string `json:"name"`
	// Namespace, when mounted, puts the control queue in the namespace
	// (control.PodQueueName): pods of the same name elsewhere then never
	// receive this pod's control messages.
	Namespace string `json:"namespace,omitempty"`
}

// ControlQueue is the control queue this pod listens on.
func (id Identity) ControlQueue() string { return control.PodQueueName(id.Namespace, id.Name) }

func (id Identity) String() string {
	if id.UID == "" {
		return id.Name
	}
	return id.Name + "/" + id.UID
}

// Differs reports whether other is a different pod. The UID decides when
// both know it: a Sequential (StatefulSet) restore keeps the pod name but
// gets a new UID. Without UIDs the name decides, which misses a restore into
// a pod of the same name; mount the UID.
func (id Identity) Differs(other Identity) bool {
	if id.UID != "" && other.UID != "" {
		return id.UID != other.UID
	}
	if id.Name != "" && other.Name != "" {
		return id.Name != other.Name
	}
	return false
}

// IdentityFiles names the files identity is read from.
type IdentityFiles struct {
	// UID is a downward-API file with metadata.uid.
	UID string
	// Name is a downward-API file with metadata.name.
	Name string
	// Namespace is a downward-API file with metadata.namespace.
	Namespace string
	// Hostname is read when Name is missing: the kubelet writes the pod
	// name there (a restored process's gethostname() still returns the
	// source's).
	Hostname string
}

// DefaultIdentityFiles are where a pod spec mounts them by convention:
//
//	volumes: [{name: podinfo, downwardAPI: {items: [
//	  {path: uid,  fieldRef: {fieldPath: metadata.uid}},
//	  {path: name, fieldRef: {fieldPath: metadata.name}},
//	  {path: namespace, fieldRef: {fieldPath: metadata.namespace}}]}}]
//	volumeMounts: [{name: podinfo, mountPath: /etc/podinfo}]
func DefaultIdentityFiles() IdentityFiles {
	return PodInfoFiles("/etc/podinfo")
}

// PodInfoFiles are the uid and name files in a downward-API directory, with
// /etc/hostname as the name's fallback.
func PodInfoFiles(dir string) IdentityFiles {
	return IdentityFiles{UID: dir + "/uid", Name: dir + "/name", Namespace: dir + "/namespace", Hostname: "/etc/hostname"}
}

// Read reads the current identity. Missing files are not errors (the UID is
// optional, the name falls back to the hostname file, then to the kernel's
// hostname); unreadable ones are.
func (f IdentityFiles) Read() (Identity, error) {
	var id Identity
	var err error
	if id.UID, err = readTrimmed(f.UID); err != nil {
		return id, err
	}
	if id.Name, err = readTrimmed(f.Name); err != nil {
		return id, err
	}
	if id.Namespace, err = readTrimmed(f.Namespace); err != nil {
		return id, err
	}
	if id.Name == "" {
		if id.Name, err = readTrimmed(f.Hostname); err != nil {
			return id, err
		}
	}
	if id.Name == "" {
		// Outside Kubernetes: the kernel's hostname is right until a restore.
		if id.Name, err = os.Hostname(); err != nil {
			return id, fmt.Errorf("no pod name in %s, %s or the kernel: %w", f.Name, f.Hostname, err)
		}
	}
	return id, nil
}

func readTrimmed(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
