package capture

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"
)

// Record is one captured request and its response: a line of a block,
// {"id", "time", "model", "version", "replica", "inputs", "outputs"}.
//
// A Record handed to Writer.Write belongs to the Writer from then on: the
// caller copies tensor data out of its pooled buffers into fresh slices
// (a copy, cheaper on the request path than encoding JSON there) and does
// not touch them again. The Writer's goroutine encodes it.
type Record struct {
	ID      string    `json:"id"`
	Time    time.Time `json:"time"`
	Model   string    `json:"model"`
	Version string    `json:"version"`
	// Replica is the gateway replica that answered.
	Replica string            `json:"replica,omitempty"`
	Inputs  map[string]Tensor `json:"inputs"`
	Outputs map[string]Tensor `json:"outputs"`
}

// Tensor is a named tensor of a Record: {"datatype", "shape", "data"} with
// the values flat in row-major order, as the V2 protocol writes them.
//
// For writing, Data is one of []float32, []float64, []int8, []int16,
// []int32, []int64, []int, []uint8, []uint16, []uint32, []uint64, []bool,
// or a json.RawMessage holding a JSON array of numbers or booleans (flat
// or nested). FP16 values are written as float32. NaN and infinities are
// written as null, which JSON readers take as missing. Read back (by
// Records), Data is always []float64: booleans are 0 or 1, null is NaN, and
// 64-bit integers beyond 2^53 lose precision.
type Tensor struct {
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
	Data     any     `json:"data"`
}

// UnmarshalJSON decodes a tensor of a captured record, its data as []float64.
func (t *Tensor) UnmarshalJSON(b []byte) error {
	var raw struct {
		Datatype string          `json:"datatype"`
		Shape    []int64         `json:"shape"`
		Data     json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	data, err := parseValues(raw.Data)
	if err != nil {
		return err
	}
	*t = Tensor{Datatype: raw.Datatype, Shape: raw.Shape, Data: data}
	return nil
}

// parseValues flattens a JSON array of numbers, booleans and nulls. Those
// hold no commas or brackets, so splitting on commas and trimming brackets
// is a full parse of a valid array, flat or nested.
func parseValues(b []byte) ([]float64, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '[' {
		return nil, fmt.Errorf("tensor data is not an array")
	}
	out := make([]float64, 0, bytes.Count(b, []byte{','})+1)
	for tok := range bytes.SplitSeq(b, []byte{','}) {
		tok = bytes.Trim(tok, "[] \t\r\n")
		switch string(tok) {
		case "":
			continue // an empty array
		case "null":
			out = append(out, math.NaN())
		case "true":
			out = append(out, 1)
		case "false":
			out = append(out, 0)
		default:
			v, err := strconv.ParseFloat(string(tok), 64)
			if err != nil {
				return nil, fmt.Errorf("tensor data holds %q, not a number", tok)
			}
			out = append(out, v)
		}
	}
	return out, nil
}

// appendRecord appends r as one JSON line.
func appendRecord(b []byte, r *Record) ([]byte, error) {
	b = append(b, `{"id":`...)
	b = appendString(b, r.ID)
	b = append(b, `,"time":"`...)
	b = r.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","model":`...)
	b = appendString(b, r.Model)
	b = append(b, `,"version":`...)
	b = appendString(b, r.Version)
	if r.Replica != "" {
		b = appendString(append(b, `,"replica":`...), r.Replica)
	}
	var err error
	if b, err = appendTensors(append(b, `,"inputs":`...), r.Inputs); err != nil {
		return b, err
	}
	if b, err = appendTensors(append(b, `,"outputs":`...), r.Outputs); err != nil {
		return b, err
	}
	return append(b, "}\n"...), nil
}

func appendTensors(b []byte, ts map[string]Tensor) ([]byte, error) {
	b = append(b, '{')
	for i, name := range slices.Sorted(maps.Keys(ts)) {
		if i > 0 {
			b = append(b, ',')
		}
		t := ts[name]
		b = appendString(b, name)
		b = append(b, `:{"datatype":`...)
		b = appendString(b, t.Datatype)
		b = append(b, `,"shape":[`...)
		for j, d := range t.Shape {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, d, 10)
		}
		b = append(b, `],"data":`...)
		var err error
		if b, err = appendData(b, t.Data); err != nil {
			return b, fmt.Errorf("tensor %q: %w", name, err)
		}
		b = append(b, '}')
	}
	return append(b, '}'), nil
}

func appendData(b []byte, data any) ([]byte, error) {
	switch v := data.(type) {
	case []float32:
		return appendFloats(b, v, 32), nil
	case []float64:
		return appendFloats(b, v, 64), nil
	case []int8:
		return appendInts(b, v), nil
	case []int16:
		return appendInts(b, v), nil
	case []int32:
		return appendInts(b, v), nil
	case []int64:
		return appendInts(b, v), nil
	case []int:
		return appendInts(b, v), nil
	case []uint8:
		return appendUints(b, v), nil
	case []uint16:
		return appendUints(b, v), nil
	case []uint32:
		return appendUints(b, v), nil
	case []uint64:
		return appendUints(b, v), nil
	case []bool:
		return appendEach(b, v, strconv.AppendBool), nil
	case json.RawMessage:
		// Checked here, off the request path, so that a bad caller cannot
		// break the block for every reader.
		if t := bytes.TrimSpace(v); len(t) == 0 || t[0] != '[' || !json.Valid(t) {
			return b, fmt.Errorf("data is not a JSON array")
		} else if _, err := parseValues(t); err != nil {
			return b, err
		}
		return append(b, bytes.TrimSpace(v)...), nil
	case nil:
		return append(b, "[]"...), nil
	}
	return b, fmt.Errorf("unsupported data type %T", data)
}

func appendFloats[T float32 | float64](b []byte, v []T, bits int) []byte {
	return appendEach(b, v, func(b []byte, x T) []byte {
		if f := float64(x); !math.IsNaN(f) && !math.IsInf(f, 0) {
			return strconv.AppendFloat(b, f, 'g', -1, bits)
		}
		return append(b, "null"...)
	})
}

func appendInts[T int8 | int16 | int32 | int64 | int](b []byte, v []T) []byte {
	return appendEach(b, v, func(b []byte, x T) []byte { return strconv.AppendInt(b, int64(x), 10) })
}

func appendUints[T uint8 | uint16 | uint32 | uint64](b []byte, v []T) []byte {
	return appendEach(b, v, func(b []byte, x T) []byte { return strconv.AppendUint(b, uint64(x), 10) })
}

// appendEach appends v as a JSON array, each value by appendOne.
func appendEach[T any](b []byte, v []T, appendOne func([]byte, T) []byte) []byte {
	b = append(b, '[')
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendOne(b, x)
	}
	return append(b, ']')
}

// appendString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // cannot fail for a string
	return append(b, q...)
}
