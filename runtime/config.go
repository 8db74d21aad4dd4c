package runtime

import (
	"fmt"
	"slices"
)

// Config configures ONNX Runtime for the whole process.
type Config struct {
	// Library is the path of libonnxruntime.so; empty means ResolveLibrary's search.
	Library string `yaml:"library"`
	// Providers lists execution providers in order of preference: "cuda", "cpu".
	Providers []string `yaml:"providers"`
	// RequireGPU makes a missing CUDA provider an error instead of a fallback to CPU.
	RequireGPU bool `yaml:"require_gpu"`
	// GPUDevice is the CUDA device id sessions run on.
	GPUDevice int `yaml:"gpu_device"`
	// CUDATF32 lets the CUDA provider multiply FP32 matrices in TF32 (10-bit
	// mantissa) on GPUs that have it: faster, but answers then differ from
	// the CPU's in the fourth digit. Off by default; the CPU ignores it.
	CUDATF32 bool `yaml:"cuda_tf32"`
	// IntraOpThreads and InterOpThreads size each session's ORT thread pools;
	// 0 lets ONNX Runtime choose.
	IntraOpThreads int `yaml:"intra_op_threads"`
	InterOpThreads int `yaml:"inter_op_threads"`
}

// DefaultConfig returns the runtime defaults: CPU only, ORT's thread choices.
func DefaultConfig() Config {
	return Config{Providers: []string{ProviderCPU}}
}

// Execution provider names accepted in Config.Providers.
const (
	ProviderCUDA = "cuda"
	ProviderCPU  = "cpu"
)

// Validate reports the first invalid setting of c.
func (c *Config) Validate() error {
	if len(c.Providers) == 0 {
		return fmt.Errorf("runtime.providers: must list at least one of %q, %q", ProviderCUDA, ProviderCPU)
	}
	for i, p := range c.Providers {
		if p != ProviderCUDA && p != ProviderCPU {
			return fmt.Errorf("runtime.providers[%d]: unknown execution provider %q (want %q or %q)", i, p, ProviderCUDA, ProviderCPU)
		}
		if slices.Index(c.Providers, p) != i {
			return fmt.Errorf("runtime.providers[%d]: %q is listed twice", i, p)
		}
	}
	if c.RequireGPU && !slices.Contains(c.Providers, ProviderCUDA) {
		return fmt.Errorf("runtime.require_gpu: needs %q in runtime.providers", ProviderCUDA)
	}
	if c.IntraOpThreads < 0 || c.InterOpThreads < 0 || c.GPUDevice < 0 {
		return fmt.Errorf("runtime: thread counts and gpu_device must not be negative")
	}
	return nil
}

// ModelConfig configures one model of the repository.
type ModelConfig struct {
	// VersionPolicy chooses which version folders are served.
	VersionPolicy VersionPolicy `yaml:"version_policy"`
	// Instances is the number of sessions per version (default 1). The
	// gateway sets it from the model's batching section.
	Instances int `yaml:"-"`
	// Inputs may fix dynamic dimensions and name features; they rename nothing.
	Inputs []InputConfig `yaml:"inputs"`
}

// InputConfig refines one model input named as the model names it.
type InputConfig struct {
	Name string `yaml:"name"`
	// Shape may replace dynamic (-1) dimensions with fixed sizes.
	Shape []int64 `yaml:"shape"`
	// Features names the columns of the input's last dimension, for drift monitoring.
	Features []string `yaml:"features"`
}

// Validate reports the first invalid setting of c, naming the model.
func (c *ModelConfig) Validate(model string) error {
	if c.Instances < 0 {
		return fmt.Errorf("models.%s.instances: must not be negative, got %d", model, c.Instances)
	}
	for i, in := range c.Inputs {
		if in.Name == "" {
			return fmt.Errorf("models.%s.inputs[%d].name: must be set", model, i)
		}
	}
	return c.VersionPolicy.validate(model)
}

// VersionPolicy chooses versions like Triton's version_policy: the Latest N
// (default 1), All, or Specific ones. At most one may be set.
type VersionPolicy struct {
	Latest   int     `yaml:"latest"`
	All      bool    `yaml:"all"`
	Specific []int64 `yaml:"specific"`
}

func (p *VersionPolicy) validate(model string) error {
	set := 0
	if p.Latest != 0 {
		set++
	}
	if p.All {
		set++
	}
	if len(p.Specific) > 0 {
		set++
	}
	switch {
	case set > 1:
		return fmt.Errorf("models.%s.version_policy: set only one of latest, all, specific", model)
	case p.Latest < 0:
		return fmt.Errorf("models.%s.version_policy.latest: must be positive, got %d", model, p.Latest)
	}
	for _, v := range p.Specific {
		if v <= 0 {
			return fmt.Errorf("models.%s.version_policy.specific: versions are positive numbers, got %d", model, v)
		}
	}
	return nil
}

// Select returns the versions of available (sorted ascending) the policy serves.
func (p *VersionPolicy) Select(available []int64) []int64 {
	switch {
	case p.All:
		return available
	case len(p.Specific) > 0:
		var out []int64
		for _, v := range available {
			if slices.Contains(p.Specific, v) {
				out = append(out, v)
			}
		}
		return out
	}
	n := max(p.Latest, 1)
	return available[max(len(available)-n, 0):]
}
