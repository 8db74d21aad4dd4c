package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
)

// Machine describes the computer a run happened on.
type Machine struct {
	CPU   string `json:"cpu"`
	Cores int    `json:"cores"`
	OS    string `json:"os"`
	Arch  string `json:"arch"`
	Go    string `json:"go"`
	// LoadAverage is the 1, 5 and 15 minute load averages when it was
	// described, such as "0.08 0.12 0.10": other work on the machine shows
	// in them and would skew a benchmark.
	LoadAverage string `json:"load_average,omitempty"`
}

// ThisMachine describes the computer this process runs on; the CPU model
// comes from /proc/cpuinfo where there is one.
func ThisMachine() Machine {
	m := Machine{CPU: "unknown", Cores: goruntime.NumCPU(), OS: goruntime.GOOS, Arch: goruntime.GOARCH, Go: goruntime.Version()}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range bytes.Lines(data) {
			key, value, ok := bytes.Cut(line, []byte(":"))
			if ok && string(bytes.TrimSpace(key)) == "model name" {
				m.CPU = string(bytes.TrimSpace(value))
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(data)); len(f) >= 3 {
			m.LoadAverage = strings.Join(f[:3], " ")
		}
	}
	return m
}

// String formats m as "AMD EPYC, 2 cores, linux/amd64, go1.26".
func (m Machine) String() string {
	return fmt.Sprintf("%s, %d cores, %s/%s, %s", m.CPU, m.Cores, m.OS, m.Arch, m.Go)
}

// ProcessRSS returns this process's resident set size in bytes, read from
// VmRSS in /proc/self/status.
func ProcessRSS() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("cannot read the resident set size: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cannot parse VmRSS %q: %w", rest, err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("cannot read the resident set size: %w", err)
	}
	return 0, fmt.Errorf("cannot read the resident set size: no VmRSS in /proc/self/status")
}
