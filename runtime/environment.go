package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/VictoriaMetrics/metrics"
	ort "github.com/yalue/onnxruntime_go"
)

var (
	providerFallbacks = metrics.NewCounter("infergate_runtime_provider_fallbacks_total")
	providerCPU       = metrics.NewGauge(`infergate_runtime_execution_provider{provider="cpu"}`, nil)
	providerCUDA      = metrics.NewGauge(`infergate_runtime_execution_provider{provider="cuda"}`, nil)
)

// MetricHelp is the HELP text of each metric family the package exports,
// by family name, for a /metrics writer that adds HELP lines. It is
// read-only.
var MetricHelp = map[string]string{
	"infergate_runtime_execution_provider":       "1 for the execution provider sessions run on (cpu or cuda), else 0.",
	"infergate_runtime_provider_fallbacks_total": "Times CUDA was configured but unusable and sessions ran on the CPU.",
}

// ErrNoGPU is returned when require_gpu is set and CUDA cannot be used.
var ErrNoGPU = errors.New("runtime: the CUDA execution provider is required (require_gpu) but cannot be used")

// envMu guards the process-wide ONNX Runtime environment, of which ONNX
// Runtime allows one.
var envMu sync.Mutex

// Environment is the process's ONNX Runtime environment with the execution
// provider it settled on. It is safe for concurrent use.
type Environment struct {
	cfg      Config
	log      *slog.Logger
	library  string
	provider string // ProviderCUDA or ProviderCPU, fixed at start
}

// NewEnvironment loads the ONNX Runtime library and initializes the
// environment. Only one Environment may be open at a time in a process.
// With providers [cuda, cpu] and no usable CUDA it falls back to CPU with
// one log line and a counted fallback, unless cfg.RequireGPU.
func NewEnvironment(cfg Config, log *slog.Logger) (*Environment, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lib, err := ResolveLibrary(cfg.Library)
	if err != nil {
		return nil, err
	}
	envMu.Lock()
	defer envMu.Unlock()
	if ort.IsInitialized() {
		return nil, errors.New("runtime: cannot open a second ONNX Runtime environment in this process")
	}
	ort.SetSharedLibraryPath(lib)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return nil, fmt.Errorf("cannot initialize ONNX Runtime from %q: %w", lib, err)
	}
	e := &Environment{cfg: cfg, log: log, library: lib}
	if err := e.chooseProvider(); err != nil {
		ort.DestroyEnvironment()
		return nil, err
	}
	if e.provider == ProviderCUDA {
		log.Info("onnx runtime ready", "version", ort.GetVersion(), "library", lib, "provider", e.provider,
			"gpu_device", cfg.GPUDevice, "cuda_tf32", cfg.CUDATF32)
	} else {
		log.Info("onnx runtime ready", "version", ort.GetVersion(), "library", lib, "provider", e.provider)
	}
	return e, nil
}

// chooseProvider settles on the first configured provider that works.
func (e *Environment) chooseProvider() error {
	for _, p := range e.cfg.Providers {
		if p == ProviderCPU {
			e.provider = ProviderCPU
			providerCPU.Set(1)
			return nil
		}
		opts, err := ort.NewSessionOptions()
		if err != nil {
			return fmt.Errorf("cannot create ONNX Runtime session options: %w", err)
		}
		err = e.appendCUDA(opts)
		opts.Destroy()
		if err == nil {
			e.provider = ProviderCUDA
			providerCUDA.Set(1)
			return nil
		}
		if e.cfg.RequireGPU {
			return fmt.Errorf("%w: %w", ErrNoGPU, err)
		}
		// Expected on every machine without a GPU or a CUDA build of the
		// library: one plain line, the library's own words only for debugging.
		providerFallbacks.Inc()
		e.log.Info("CUDA is not available with this ONNX Runtime library and machine, falling back to CPU (require_gpu: true makes this an error)")
		e.log.Debug("CUDA execution provider load error", "error", err.Error())
	}
	e.provider = ProviderCPU
	providerCPU.Set(1)
	return nil
}

// appendCUDA adds the CUDA execution provider to opts with the configured
// device and TF32 setting.
func (e *Environment) appendCUDA(opts *ort.SessionOptions) error {
	cuda, err := ort.NewCUDAProviderOptions()
	if err != nil {
		return err
	}
	defer cuda.Destroy()
	if err := cuda.Update(cudaOptions(&e.cfg)); err != nil {
		return err
	}
	return opts.AppendExecutionProviderCUDA(cuda)
}

// cudaOptions returns the CUDA provider options cfg asks for. TF32 is
// always set explicitly: the provider's own default is on, which would
// make the GPU's answers differ from the CPU's unless asked for.
func cudaOptions(cfg *Config) map[string]string {
	tf32 := "0"
	if cfg.CUDATF32 {
		tf32 = "1"
	}
	return map[string]string{"device_id": strconv.Itoa(cfg.GPUDevice), "use_tf32": tf32}
}

// Provider returns the execution provider sessions run on: "cuda" or "cpu".
func (e *Environment) Provider() string { return e.provider }

// Close destroys the ONNX Runtime environment. Every session must have been
// closed before.
func (e *Environment) Close() error {
	envMu.Lock()
	defer envMu.Unlock()
	providerCPU.Set(0)
	providerCUDA.Set(0)
	return ort.DestroyEnvironment()
}

// sessionOptions returns options for a new session on the chosen provider.
func (e *Environment) sessionOptions() (*ort.SessionOptions, error) {
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("cannot create ONNX Runtime session options: %w", err)
	}
	if err := e.configure(opts); err != nil {
		opts.Destroy()
		return nil, err
	}
	return opts, nil
}

func (e *Environment) configure(opts *ort.SessionOptions) error {
	if n := e.cfg.IntraOpThreads; n > 0 {
		if err := opts.SetIntraOpNumThreads(n); err != nil {
			return fmt.Errorf("cannot set intra-op threads to %d: %w", n, err)
		}
	}
	if n := e.cfg.InterOpThreads; n > 0 {
		if err := opts.SetInterOpNumThreads(n); err != nil {
			return fmt.Errorf("cannot set inter-op threads to %d: %w", n, err)
		}
	}
	if e.provider == ProviderCUDA {
		if err := e.appendCUDA(opts); err != nil {
			return fmt.Errorf("cannot enable the CUDA execution provider: %w", err)
		}
	}
	return nil
}
