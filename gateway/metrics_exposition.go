package gateway

import (
	"bytes"
	"io"
	"maps"
	"slices"
	"sync"

	"github.com/VictoriaMetrics/metrics"

	"github.com/infergate/infergate/batcher"
	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/retrain/capture"
	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/runtime"
)

// The metrics library writes each registered metrics.Set on its own, so a
// family whose series live in several sets (one per model version, per
// capture, per outbox) comes out in pieces, each with its own TYPE line,
// which Prometheus' parser refuses. writeMetrics collects the pieces and
// writes each family once, under the HELP text of metricHelp.

func init() {
	// With metadata on, the library writes a TYPE line before each piece
	// of a family: writeMetrics reads the family and its type from it.
	metrics.ExposeMetadata(true)
}

// metricHelp is the HELP text of every family /metrics writes: the
// tables of the packages that register series, merged. It is read-only.
var metricHelp = func() map[string]string {
	all := make(map[string]string)
	for _, table := range []map[string]string{gatewayMetricHelp, batchWorkerHelp, processMetricHelp, batcher.MetricHelp,
		drift.MetricHelp, capture.MetricHelp, outbox.MetricHelp, runtime.MetricHelp} {
		for name, help := range table {
			if _, dup := all[name]; dup {
				panic("BUG: two HELP texts for metric family " + name)
			}
			all[name] = help
		}
	}
	return all
}()

// metricFamily is one family's TYPE and its series lines, in the order the
// library wrote them.
type metricFamily struct {
	typ    []byte
	series []byte
}

// exposition is the buffers of one writeMetrics call.
type exposition struct {
	raw, out bytes.Buffer
	families map[string]*metricFamily
}

var expositions = sync.Pool{New: func() any { return &exposition{families: make(map[string]*metricFamily)} }}

// writeMetrics writes every registered series, the Go runtime's and the
// process's included, to w in the Prometheus text format: families sorted
// by name, each written once with its HELP and TYPE lines. It is safe for
// concurrent use.
func writeMetrics(w io.Writer) {
	e := expositions.Get().(*exposition)
	defer func() {
		e.raw.Reset()
		e.out.Reset()
		clear(e.families)
		expositions.Put(e)
	}()
	metrics.WritePrometheus(&e.raw, true)
	var cur *metricFamily
	for line := range bytes.Lines(e.raw.Bytes()) {
		switch {
		case bytes.HasPrefix(line, []byte("# HELP ")):
		case bytes.HasPrefix(line, []byte("# TYPE ")):
			name, typ, _ := bytes.Cut(bytes.TrimSpace(line[len("# TYPE "):]), []byte(" "))
			if cur = e.families[string(name)]; cur == nil {
				cur = &metricFamily{typ: typ}
				e.families[string(name)] = cur
			} else if !bytes.Equal(cur.typ, typ) {
				panic("BUG: metric family " + string(name) + " registered as " + string(cur.typ) + " and as " + string(typ))
			}
		case cur == nil:
			panic("BUG: series without a TYPE line: " + string(line))
		default:
			cur.series = append(cur.series, line...)
		}
	}
	for old, fix := range processMetricFixes {
		if f := e.families[old]; f != nil {
			delete(e.families, old)
			f.typ = []byte(fix.typ)
			if fix.name != old {
				f.series = bytes.ReplaceAll(f.series, []byte(old), []byte(fix.name))
			}
			e.families[fix.name] = f
		}
	}
	for _, name := range slices.Sorted(maps.Keys(e.families)) {
		f := e.families[name]
		help := metricHelp[name]
		if help == "" {
			help = "Undocumented: add it to the HELP table of the package that registers it."
		}
		e.out.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " ")
		e.out.Write(f.typ)
		e.out.WriteByte('\n')
		e.out.Write(f.series)
	}
	w.Write(e.out.Bytes())
}

// processMetricFixes renames or retypes the Go runtime's and the process's
// families that the metrics library writes against Prometheus' naming
// rules: counters without _total, counters typed as gauges.
var processMetricFixes = map[string]struct{ name, typ string }{
	"go_cgo_calls_count":                     {"go_cgo_calls_total", "counter"},
	"go_cpu_count":                           {"go_cpus", "gauge"},
	"go_gc_forced_count":                     {"go_gc_forced_total", "counter"},
	"process_io_read_bytes_total":            {"process_io_read_bytes_total", "counter"},
	"process_io_written_bytes_total":         {"process_io_written_bytes_total", "counter"},
	"process_io_read_syscalls_total":         {"process_io_read_syscalls_total", "counter"},
	"process_io_write_syscalls_total":        {"process_io_write_syscalls_total", "counter"},
	"process_io_storage_read_bytes_total":    {"process_io_storage_read_bytes_total", "counter"},
	"process_io_storage_written_bytes_total": {"process_io_storage_written_bytes_total", "counter"},
}

// processMetricHelp is the HELP text of the Go runtime's and the
// process's families (by their names after processMetricFixes).
var processMetricHelp = map[string]string{
	"go_cgo_calls_total":                            "Calls from Go to C (ONNX Runtime) made by the process.",
	"go_cpus":                                       "Logical CPUs usable by the process.",
	"go_gc_cpu_seconds_total":                       "CPU time in seconds spent by the Go garbage collector.",
	"go_gc_duration_seconds":                        "Garbage collection pauses in seconds (stop-the-world), as quantiles.",
	"go_gc_forced_total":                            "Garbage collections forced by the application (runtime.GC, debug.FreeOSMemory).",
	"go_gc_mark_assist_cpu_seconds_total":           "CPU time in seconds goroutines spent assisting the garbage collector's marking.",
	"go_gc_pauses_seconds":                          "Garbage collection pauses in seconds (stop-the-world), as a histogram.",
	"go_gomaxprocs":                                 "GOMAXPROCS: the most OS threads that run Go code at once.",
	"go_goroutines":                                 "Goroutines that exist now.",
	"go_info":                                       "1, labelled with the Go version the binary was built with.",
	"go_info_ext":                                   "1, labelled with the compiler, architecture, operating system and GOROOT of the build.",
	"go_memlimit_bytes":                             "The Go runtime's soft memory limit in bytes (GOMEMLIMIT).",
	"go_memstats_alloc_bytes":                       "Bytes of allocated heap objects now.",
	"go_memstats_alloc_bytes_total":                 "Bytes allocated for heap objects since the process started.",
	"go_memstats_buck_hash_sys_bytes":               "Bytes of memory in the profiling bucket hash tables.",
	"go_memstats_frees_total":                       "Heap objects freed since the process started.",
	"go_memstats_gc_cpu_fraction":                   "Fraction (0 to 1) of the available CPU time used by the garbage collector since the process started.",
	"go_memstats_gc_sys_bytes":                      "Bytes of memory in garbage collection metadata.",
	"go_memstats_heap_alloc_bytes":                  "Bytes of allocated heap objects now.",
	"go_memstats_heap_idle_bytes":                   "Bytes in idle (unused) heap spans.",
	"go_memstats_heap_inuse_bytes":                  "Bytes in in-use heap spans.",
	"go_memstats_heap_objects":                      "Allocated heap objects now.",
	"go_memstats_heap_released_bytes":               "Bytes of physical memory returned to the operating system.",
	"go_memstats_heap_sys_bytes":                    "Bytes of heap memory obtained from the operating system.",
	"go_memstats_last_gc_time_seconds":              "Unix time in seconds at which the last garbage collection finished.",
	"go_memstats_lookups_total":                     "Pointer lookups performed by the runtime since the process started.",
	"go_memstats_mallocs_total":                     "Heap objects allocated since the process started.",
	"go_memstats_mcache_inuse_bytes":                "Bytes of allocated mcache structures.",
	"go_memstats_mcache_sys_bytes":                  "Bytes of memory obtained from the operating system for mcache structures.",
	"go_memstats_mspan_inuse_bytes":                 "Bytes of allocated mspan structures.",
	"go_memstats_mspan_sys_bytes":                   "Bytes of memory obtained from the operating system for mspan structures.",
	"go_memstats_next_gc_bytes":                     "Heap size in bytes at which the next garbage collection starts.",
	"go_memstats_other_sys_bytes":                   "Bytes of memory in miscellaneous off-heap runtime allocations.",
	"go_memstats_stack_inuse_bytes":                 "Bytes in stack spans.",
	"go_memstats_stack_sys_bytes":                   "Bytes of stack memory obtained from the operating system.",
	"go_memstats_sys_bytes":                         "Bytes of memory obtained from the operating system by the Go runtime.",
	"go_mutex_wait_seconds_total":                   "Time in seconds goroutines spent blocked on sync.Mutex or sync.RWMutex.",
	"go_scavenge_cpu_seconds_total":                 "CPU time in seconds spent returning memory to the operating system.",
	"go_sched_latencies_seconds":                    "Time in seconds goroutines spent runnable before they ran.",
	"go_threads":                                    "OS threads created by the process.",
	"process_cpu_seconds_system_total":              "CPU time in seconds the process spent in the kernel.",
	"process_cpu_seconds_total":                     "CPU time in seconds the process spent, user and system.",
	"process_cpu_seconds_user_total":                "CPU time in seconds the process spent in user space.",
	"process_io_read_bytes_total":                   "Bytes the process read through system calls, from storage or not.",
	"process_io_read_syscalls_total":                "Read system calls the process made.",
	"process_io_storage_read_bytes_total":           "Bytes the process caused to be read from storage.",
	"process_io_storage_written_bytes_total":        "Bytes the process caused to be written to storage.",
	"process_io_write_syscalls_total":               "Write system calls the process made.",
	"process_io_written_bytes_total":                "Bytes the process wrote through system calls, to storage or not.",
	"process_major_pagefaults_total":                "Page faults of the process that needed a read from disk.",
	"process_max_fds":                               "The most file descriptors the process may open.",
	"process_minor_pagefaults_total":                "Page faults of the process resolved without a read from disk.",
	"process_num_threads":                           "OS threads of the process now.",
	"process_open_fds":                              "File descriptors the process has open now.",
	"process_pressure_cpu_stalled_seconds_total":    "Time in seconds all of the process's tasks were stalled waiting for CPU (Linux pressure stall information).",
	"process_pressure_cpu_waiting_seconds_total":    "Time in seconds some of the process's tasks waited for CPU (Linux pressure stall information).",
	"process_pressure_io_stalled_seconds_total":     "Time in seconds all of the process's tasks were stalled waiting for I/O (Linux pressure stall information).",
	"process_pressure_io_waiting_seconds_total":     "Time in seconds some of the process's tasks waited for I/O (Linux pressure stall information).",
	"process_pressure_memory_stalled_seconds_total": "Time in seconds all of the process's tasks were stalled waiting for memory (Linux pressure stall information).",
	"process_pressure_memory_waiting_seconds_total": "Time in seconds some of the process's tasks waited for memory (Linux pressure stall information).",
	"process_resident_memory_anon_bytes":            "Bytes of anonymous memory the process has resident.",
	"process_resident_memory_bytes":                 "Bytes of memory the process has resident (RSS).",
	"process_resident_memory_file_bytes":            "Bytes of file-backed memory the process has resident.",
	"process_resident_memory_peak_bytes":            "Most bytes of memory the process ever had resident.",
	"process_resident_memory_shared_bytes":          "Bytes of shared memory the process has resident.",
	"process_start_time_seconds":                    "Unix time in seconds at which the process started.",
	"process_virtual_memory_bytes":                  "Bytes of virtual memory the process has mapped.",
	"process_virtual_memory_peak_bytes":             "Most bytes of virtual memory the process ever had mapped.",
}
