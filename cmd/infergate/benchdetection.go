package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/infergate/infergate/bench"
	"github.com/infergate/infergate/bench/detection"
)

// detectionOptions are the flags of `infergate bench --drift-detection`.
type detectionOptions struct {
	out      string // Markdown report; the JSON one goes beside it
	quick    bool
	progress io.Writer
	command  string
}

// runDetection runs the drift detection benchmark and writes its Markdown
// report to o.out and its numbers to the same path with .json.
func runDetection(ctx context.Context, o detectionOptions) error {
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return fmt.Errorf("cannot create the results folder: %w", err)
	}
	m := bench.ThisMachine()
	meta := detection.Meta{Command: o.command, Date: time.Now(), CPUs: runtime.NumCPU(), Build: version(),
		Machine: fmt.Sprintf("%s (%s/%s, %s, load %s)", m.CPU, m.OS, m.Arch, m.Go, m.LoadAverage)}
	res, err := detection.Run(ctx, detection.Options{Quick: o.quick, Progress: o.progress})
	if err != nil {
		return err
	}
	var md, js bytes.Buffer
	if err := res.WriteMarkdown(&md, meta); err != nil {
		return err
	}
	if err := res.WriteJSON(&js, meta); err != nil {
		return err
	}
	jsonPath := strings.TrimSuffix(o.out, filepath.Ext(o.out)) + ".json"
	for path, data := range map[string][]byte{o.out: md.Bytes(), jsonPath: js.Bytes()} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return fmt.Errorf("cannot write the drift detection report: %w", err)
		}
	}
	fmt.Fprintf(os.Stderr, "wrote %s and %s in %s\n", o.out, jsonPath, res.Elapsed.Round(time.Second))
	return nil
}
