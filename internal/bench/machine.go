package bench

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/ms2m/ms2m/internal/lab/probe"
)

// Machine is what the numbers were measured on: the whole lab shares it.
type Machine struct {
	CPU         string `json:"cpu"`
	Cores       int    `json:"cores"`
	MemoryBytes int64  `json:"memoryBytes"`
	Kernel      string `json:"kernel"`
	OS          string `json:"os"`
	Kubernetes  string `json:"kubernetes,omitempty"`
	Containerd  string `json:"containerd,omitempty"`
	Runc        string `json:"runc,omitempty"`
	CRIU        string `json:"criu,omitempty"`
	RabbitMQ    string `json:"rabbitmq,omitempty"`
}

// DescribeMachine reads the host, and the lab's capability report when
// there is one.
func DescribeMachine(capabilities, kubeVersion, rabbitmqVersion string) Machine {
	m := Machine{Cores: runtime.NumCPU(), Kubernetes: kubeVersion, RabbitMQ: rabbitmqVersion}
	m.CPU = procField("/proc/cpuinfo", "model name", ":")
	var kb int64
	fmt.Sscanf(procField("/proc/meminfo", "MemTotal", ":"), "%d", &kb)
	m.MemoryBytes = kb << 10
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.OS = strings.Trim(procField("/etc/os-release", "PRETTY_NAME", "="), `"`)
	if r, err := probe.Read(capabilities); err == nil && r != nil {
		m.Containerd, m.Runc, m.CRIU = r.Runtime.Containerd, r.Runtime.Runc, r.CRIU.Version
	}
	return m
}

// procField is the value of the first "key<sep>value" line.
func procField(path, key, sep string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), sep)
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func (m Machine) String() string {
	s := fmt.Sprintf("%s, %d cores, %.0f GiB RAM; %s, Linux %s", m.CPU, m.Cores, float64(m.MemoryBytes)/(1<<30), m.OS, m.Kernel)
	var parts []string
	for _, p := range [][2]string{{"Kubernetes", m.Kubernetes}, {"containerd", m.Containerd}, {"runc", m.Runc}, {"CRIU", m.CRIU}, {"RabbitMQ", m.RabbitMQ}} {
		if p[1] != "" {
			parts = append(parts, p[0]+" "+p[1])
		}
	}
	if len(parts) > 0 {
		s += "; " + strings.Join(parts, ", ")
	}
	return s
}
