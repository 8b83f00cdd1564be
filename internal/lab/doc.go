// Package lab brings up, checks and tears down the lab: a real two-node
// Kubernetes cluster on one machine, made only of upstream parts run as
// plain processes (etcd, the control plane, two kubelets with a containerd
// each, runc, CRIU, CNI), plus an OCI registry and RabbitMQ.
//
//	make lab-up                # or: bin/ms2m lab up   (idempotent)
//	eval "$(bin/ms2m lab env)" # KUBECONFIG, MS2M_REGISTRY, MS2M_AMQP_URL, ...
//	bin/ms2m lab status        # health, memory, capability report
//	bin/ms2m lab images        # the project's images, into the lab registry
//	make lab-down              # the host as it was
//	make test-lab              # up, lab tests, down, leftover check
//
// What a workload in the lab must know:
//   - Images are referenced as 127.0.0.1:5055/ms2m/NAME (MS2M_REGISTRY):
//     containerd pulls a checkpoint's base image with its default
//     resolver, which speaks plain HTTP to loopback registries only. Pods on
//     the pod network reach the same registry at MS2M_REGISTRY_FROM_PODS;
//     host-network pods (the node agents) at 127.0.0.1:5055.
//   - There is no kube-proxy: in-cluster clients get KUBERNETES_SERVICE_HOST
//     and KUBERNETES_SERVICE_PORT from MS2M_APISERVER_FROM_PODS.
//   - RabbitMQ listens on the host IP (MS2M_AMQP_URL), reachable from pods
//     and the host; its management API is MS2M_RABBITMQ_MGMT_URL.
//   - Go programs must not listen with MPTCP (CRIU cannot dump it): the
//     project's images set GODEBUG=multipathtcp=0.
//   - /etc/criu/runc.conf holds tcp-close, skip-in-flight and network-lock
//     skip while the lab is up: pods with live TCP connections
//     checkpoint, and a restored pod finds them closed and reconnects;
//     and action-script MS2M_LAB_DIR/bin/ms2m-criu-hook, ms2m's freeze
//     hook (internal/criuhook).
//   - The kubelet writes checkpoint archives under
//     MS2M_LAB_DIR/NODE/kubelet/root/checkpoints; internal/ckptimage turns
//     one into an image that restores when a pod is created from it.
//   - capabilities.json (MS2M_LAB_CAPABILITIES) says which techniques the
//     kernel and CRIU allow (stop-and-copy, post-copy, pre-copy, tcp-close).
//
// Layout of the state directory (MS2M_LAB_DIR, /var/tmp/ms2m-lab):
//
//	lab.json            the configuration `up` used; status, env, down read it
//	capabilities.json   the capability report
//	pki/                CA, certificates, kubeconfigs (admin.kubeconfig)
//	run/                the supervisor (socket, procs.json: PIDs and start times)
//	logs/               one log per process
//	host/               what `down` restores: sysctls, runc.conf, new host dirs
//	bin/                containerd's PATH head: criu wrapper, crictl, nft
//	cp/etcd/            etcd's data
//	registry/, rabbitmq/
//	node-a/, node-b/    containerd (root, state, socket), kubelet, CNI, tmp
//
// Binaries are cached outside: Kubernetes in ~/.cache/ms2m/k8s/VERSION/bin
// (hack/kube-binaries.sh, shared with envtest), the Debian packages and
// crictl in ~/.cache/ms2m/lab/deps-KEY (KEY changes with the pinned spec).
package lab
