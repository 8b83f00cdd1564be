package bench

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/ms2m/ms2m/api/v1alpha1"
	"github.com/ms2m/ms2m/internal/demo"
)

//go:embed matrix.yaml
var defaultConfig []byte

// Config is the bench's matrix as data (matrix.yaml is the default).
type Config struct {
	// Baseline and Reference name the modes every mode is compared with:
	// stop-and-copy and the MS2M configuration.
	Baseline  string            `json:"baseline"`
	Reference string            `json:"reference"`
	Run       RunSettings       `json:"run"`
	Modes     []Mode            `json:"modes"`
	Presets   map[string]Preset `json:"presets"`
}

// RunSettings shape every run alike, so that cells compare.
type RunSettings struct {
	Delay    metav1.Duration `json:"delay"`
	Prefetch int             `json:"prefetch"`
	Warmup   metav1.Duration `json:"warmup"`
	Settle   metav1.Duration `json:"settle"`
	Timeout  metav1.Duration `json:"timeout"`
}

// Mode is one way of migrating.
type Mode struct {
	Name     string `json:"name"`
	Workload string `json:"workload"`
	// Consumer is the workload's program: sdk (the SDK consumer, the
	// default) or protocol (a workload without the SDK that speaks only
	// the control protocol, at least once).
	Consumer string `json:"consumer,omitempty"`
	// Env, Prefetch, Delay and Grace shape the consumer where the run's
	// settings do not fit (SHADOW's sample workload, say).
	Env      map[string]string `json:"env,omitempty"`
	Prefetch int               `json:"prefetch,omitempty"`
	Delay    *metav1.Duration  `json:"delay,omitempty"`
	Grace    int64             `json:"grace,omitempty"`
	// Spec holds StatefulMigration spec fields, decoded strictly into the
	// API type: a field the API lacks is an error, not a silent no-op.
	Spec json.RawMessage `json:"spec"`
}

// Preset is a slice of the matrix; empty Modes means every mode.
type Preset struct {
	Modes  []string `json:"modes,omitempty"`
	Rates  []int    `json:"rates,omitempty"`
	States []string `json:"states,omitempty"`
	Reps   int      `json:"reps,omitempty"`
}

// DefaultConfig is matrix.yaml.
func DefaultConfig() (*Config, error) { return ParseConfig(defaultConfig) }

// LoadConfig reads a config file; "" is the default.
func LoadConfig(path string) (*Config, error) {
	if path == "" {
		return DefaultConfig()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig reads YAML or JSON and validates it.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, err
	}
	return &c, c.Validate()
}

var modeName = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)

// Validate rejects what would fail only hours into a run.
func (c *Config) Validate() error {
	seen := map[string]bool{}
	for _, m := range c.Modes {
		if !modeName.MatchString(m.Name) {
			return fmt.Errorf("mode name %q: lowercase letters, digits, '.' and '-'", m.Name)
		}
		if seen[m.Name] {
			return fmt.Errorf("mode %q is defined twice", m.Name)
		}
		seen[m.Name] = true
		if _, err := m.MigrationSpec(); err != nil {
			return fmt.Errorf("mode %s: %w", m.Name, err)
		}
		if !slices.Contains([]string{demo.KindPod, demo.KindDeployment, demo.KindStatefulSet}, m.Workload) {
			return fmt.Errorf("mode %s: workload %q is not Pod, Deployment or StatefulSet", m.Name, m.Workload)
		}
		if !slices.Contains([]string{"", ConsumerSDK, ConsumerProtocol}, m.Consumer) {
			return fmt.Errorf("mode %s: consumer %q is not %s or %s", m.Name, m.Consumer, ConsumerSDK, ConsumerProtocol)
		}
	}
	for _, n := range []string{c.Baseline, c.Reference} {
		if !seen[n] {
			return fmt.Errorf("baseline/reference mode %q is not defined", n)
		}
	}
	for name, p := range c.Presets {
		if err := p.validate(seen); err != nil {
			return fmt.Errorf("preset %s: %w", name, err)
		}
	}
	return nil
}

func (p Preset) validate(modes map[string]bool) error {
	for _, m := range p.Modes {
		if !modes[m] {
			return fmt.Errorf("unknown mode %q", m)
		}
	}
	for _, r := range p.Rates {
		if r <= 0 {
			return fmt.Errorf("rate %d: must be positive", r)
		}
	}
	for _, s := range p.States {
		if _, err := StateBytes(s); err != nil {
			return err
		}
	}
	if p.Reps < 0 {
		return fmt.Errorf("reps %d: must be positive", p.Reps)
	}
	return nil
}

// StateBytes parses a state size such as 64Mi.
func StateBytes(s string) (int64, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil || q.Value() <= 0 {
		return 0, fmt.Errorf("state %q: want a positive size such as 64Mi", s)
	}
	return q.Value(), nil
}

// MigrationSpec decodes the mode's spec fields. The bench owns the source,
// target and stream, so a mode may not set them.
func (m Mode) MigrationSpec() (v1alpha1.StatefulMigrationSpec, error) {
	var s v1alpha1.StatefulMigrationSpec
	if len(m.Spec) == 0 {
		return s, nil
	}
	d := json.NewDecoder(bytes.NewReader(m.Spec))
	d.DisallowUnknownFields()
	if err := d.Decode(&s); err != nil {
		return s, fmt.Errorf("spec: %w", err)
	}
	if s.SourcePod != "" || s.TargetNode != "" || s.MessageQueueConfig != nil {
		return s, fmt.Errorf("spec: sourcePod, targetNode and messageQueueConfig are set by the bench")
	}
	return s, nil
}

// SpecKey is the spec in canonical JSON (sorted keys, no spaces): two
// modes with the same key migrate the same way.
func (m Mode) SpecKey() string {
	var v any
	if len(m.Spec) == 0 || json.Unmarshal(m.Spec, &v) != nil {
		return "{}"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// Describe names the technique the way rows and the report show it.
func (m Mode) Describe() (strategy, transfer, replay string) {
	s, _ := m.MigrationSpec()
	strategy = string(s.MigrationStrategy)
	if s.IsAutoStrategy() {
		strategy = string(v1alpha1.StrategyAuto)
	}
	return strategy, string(s.EffectiveTransferMode()), string(s.EffectiveReplayMode())
}

// Mode returns the mode called name.
func (c *Config) Mode(name string) (Mode, bool) {
	for _, m := range c.Modes {
		if m.Name == name {
			return m, true
		}
	}
	return Mode{}, false
}

// Consumers the bench can run.
const (
	ConsumerSDK      = "sdk"
	ConsumerProtocol = "protocol"
)

// workload is the consumer a run of m starts.
func (m Mode) workload(lab Lab, s RunSettings, state string) demo.Workload {
	w := demo.Workload{Kind: m.Workload, Namespace: Namespace, Name: "consumer", Image: lab.ConsumerImage,
		AMQPURL: lab.AMQPURL, Queue: "ms2m-bench.orders", Delay: s.Delay.Duration, StateBytes: state, Prefetch: s.Prefetch,
		Node: lab.SourceNode, Env: m.Env, Grace: m.Grace}
	if m.Consumer == ConsumerProtocol {
		w.Image = lab.ProtocolConsumerImage
	}
	if m.Prefetch > 0 {
		w.Prefetch = m.Prefetch
	}
	if m.Delay != nil {
		w.Delay = m.Delay.Duration
	}
	return w
}

// describeConsumer names the consumer a mode runs and how it differs from
// the run's settings.
func (m Mode) describeConsumer(run RunSettings) string {
	name := "SDK"
	if m.Consumer == ConsumerProtocol {
		name = "protocol only (at least once)"
	}
	prefetch, delay := run.Prefetch, run.Delay.Duration
	if m.Prefetch > 0 {
		prefetch = m.Prefetch
	}
	if m.Delay != nil {
		delay = m.Delay.Duration
	}
	out := fmt.Sprintf("%s, prefetch %d, %s/message", name, prefetch, delay)
	for _, k := range slices.Sorted(maps.Keys(m.Env)) {
		out += fmt.Sprintf(", %s=%s", k, m.Env[k])
	}
	if m.Grace > 0 {
		out += fmt.Sprintf(", grace %d s", m.Grace)
	}
	return out
}
