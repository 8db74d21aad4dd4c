package strictyaml

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Size is a byte count that decodes from YAML as a plain integer or a string
// with a unit: "512", "64KiB", "16MiB", "1GiB", "10MB" (SI units kB, MB, GB,
// TB are powers of 1000; IEC units KiB, MiB, GiB, TiB are powers of 1024;
// units are case-sensitive and may follow one space). A Size is a plain value,
// safe for concurrent use.
type Size int64

// sizeUnits maps each accepted unit, and no unit, to its bytes.
var sizeUnits = map[string]int64{
	"": 1, "B": 1,
	"kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
}

// iecUnits come largest first, so that String picks the largest exact unit.
var iecUnits = []string{"TiB", "GiB", "MiB", "KiB"}

// UnmarshalYAML decodes a size; negative and overflowing values are errors
// that name the value.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("invalid size: want a number of bytes such as 512 or 16MiB, got %s", n.ShortTag())
	}
	v, err := parseSize(n.Value)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

func parseSize(text string) (Size, error) {
	if strings.HasPrefix(text, "-") {
		return 0, fmt.Errorf("invalid size %q: must not be negative", text)
	}
	end := strings.IndexFunc(text, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(text)
	}
	digits, unit := text[:end], text[end:]
	if u, spaced := strings.CutPrefix(unit, " "); spaced && u != "" {
		unit = u
	}
	mult, ok := sizeUnits[unit]
	if digits == "" || !ok {
		return 0, fmt.Errorf("invalid size %q: want a whole number of bytes with an optional unit: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB", text)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q: too large for a 64-bit byte count", text)
	}
	return Size(n * mult), nil
}

// String formats s in the largest IEC unit that divides it exactly ("16MiB"),
// else as a plain byte count; either form decodes back to s.
func (s Size) String() string {
	for _, unit := range iecUnits {
		if mult := Size(sizeUnits[unit]); s > 0 && s%mult == 0 {
			return strconv.FormatInt(int64(s/mult), 10) + unit
		}
	}
	return strconv.FormatInt(int64(s), 10)
}
