package gateway

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/infergate/infergate/runtime"
)

// labelsFile is the file in a version's folder that names the classes of
// its classification outputs, one label a line in class index order.
const labelsFile = "labels.txt"

// LoadLabels reads the labels.txt of the version folder dir, if any, and
// returns the labels of each of outputs (nil where none): every [batch,
// classes] FP32 or FP64 output whose class count is that of the labels, or
// dynamic, is labelled by them, for the classification extension. A
// labels.txt that is not UTF-8, has an empty line, or whose count differs
// from the first output's classes (as an upload is checked) is an error.
func LoadLabels(dir string, outputs []runtime.TensorInfo) ([][]string, error) {
	path := filepath.Join(dir, labelsFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read labels: %w", err)
	}
	labels, err := parseClassLabels(data)
	if err != nil {
		return nil, fmt.Errorf("cannot read labels of %q: %w", path, err)
	}
	if len(outputs) > 0 {
		if shape := outputs[0].Shape; len(shape) > 0 && shape[len(shape)-1] > 0 && int64(len(labels)) != shape[len(shape)-1] {
			return nil, fmt.Errorf("cannot read labels of %q: %s has %d labels, the output %q has %d classes",
				path, labelsFile, len(labels), outputs[0].Name, shape[len(shape)-1])
		}
	}
	out := make([][]string, len(outputs))
	for i, info := range outputs {
		if len(info.Shape) == 2 && (info.DataType == runtime.FP32 || info.DataType == runtime.FP64) &&
			(info.Shape[1] == runtime.Dynamic || info.Shape[1] == int64(len(labels))) {
			out[i] = labels
		}
	}
	return out, nil
}

// parseClassLabels splits a labels.txt into its labels: UTF-8 text, one
// non-empty label a line, the last line's newline optional; a trailing
// carriage return of a line is dropped.
func parseClassLabels(data []byte) ([]string, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%s is not UTF-8 text", labelsFile)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	for i, line := range lines {
		lines[i] = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(lines[i]) == "" {
			return nil, fmt.Errorf("%s: line %d is empty: it holds one label a line", labelsFile, i+1)
		}
	}
	return lines, nil
}
