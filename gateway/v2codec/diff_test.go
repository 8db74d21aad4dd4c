package v2codec

import (
	"bytes"
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/infergate/infergate/runtime"
)

// codecOracleSeeds are requests, good and bad, whose mutations the
// differential tests decode with both decoders.
var codecOracleSeeds = []string{
	`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1.5,-2]}]}`,
	`{"id":"1","parameters":{"timeout":10,"binary_data_output":true},"outputs":[{"name":"label"}],"inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[[1,2],[3,4]]}]}`,
	`{"outputs":[{"name":"probabilities","parameters":{"binary_data":false}},{"name":"label"}],"parameters":{"binary_data_output":true,"priority":3},"inputs":[{"data":[[1,2],[3,4]],"shape":[2,2],"datatype":"FP32","name":"x"}]}`,
	`{"inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[1,2,3,4]},{"name":"m","datatype":"BOOL","shape":[3],"data":[true,false,true]},{"name":"h","datatype":"FP16","shape":[2],"data":[0.1,65504]}]}`,
	`{"inputs":[{"shape":[2,2],"data":[1,2,3,4],"name":"x","datatype":"FP32"},{"data":[true,false,true],"name":"m","datatype":"BOOL","shape":[3]},{"name":"h","data":[0.1,65504],"datatype":"FP16","shape":[2]}]}`,
	`{"inputs":[{"name":"k","datatype":"INT8","shape":[2,1],"data":[[-128],[127]]},{"name":"u","datatype":"UINT64","shape":[1],"data":[18446744073709551615]},{"name":"d","datatype":"FP64","shape":[2],"data":[1e-300,-0]},{"name":"w","datatype":"UINT16","shape":[1,2,1],"data":[[[1],[65535]]]}]}`,
	`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,"NaN"]}]}`,
	`{"inputs":[{"name":"x","datatype":"FP32","shape":[1000000000000,1000000000000],"data":[[1]]}]}`,
	`{"inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[[1,2],[3]]}]}`,
	`{"inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[[1,2],[3,4,5,6]],"parameters":{"x":1}}]}`,
	`{"inputs":[{"name":"k","datatype":"INT8","shape":[2,1],"data":[300,1.5]}]}`,
	`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2,3,4,5,6,7,8]},{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`,
	`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}],"id":"a","\u0069d":"b"}`,
	`{"inputs":[{"n\u0061me":"x","datatype":"FP32","shape":[1,2],"data":[1e39,2]}],"outputs":[{"name":"label","parameters":{"binary_data":1}}]}`,
	`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]} {}`,
	`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}],"outputs":[{"name":"probabilities","parameters":{"classification":2,"binary_data":true}},{"name":"label","parameters":{"cl\u0061ssification":1}}]}`,
	`[[[[[[[[[[`,
}

// codecOracleHeader is the JSON header of a body that the binary seeds
// below send with their tail.
const codecOracleHeader = `{"inputs":[{"name":"h","datatype":"FP16","shape":[2],"parameters":{"binary_data_size":4}},{"name":"x","datatype":"FP32","shape":[0,2],"data":[]},{"name":"m","datatype":"BOOL","shape":[2],"parameters":{"binary_data_size":2}}]}`

// codecCompareWithOracle decodes body with both decoders and fails unless
// they agree: on success on everything decoded and the values counted; on
// failure on the status, and on the very message where the former decoder
// refused the JSON itself.
func codecCompareWithOracle(t *testing.T, body []byte, headerLen, maxValues int, model []runtime.TensorInfo) {
	t.Helper()
	r := AcquireRequest()
	defer ReleaseRequest(r)
	err := r.Decode(body, headerLen, maxValues, model, codecClassifierOutputs)
	var o oracleRequest
	scanErr := o.scan(body, headerLen, maxValues)
	oracleErr := scanErr
	if oracleErr == nil {
		oracleErr = o.parse(model, codecClassifierOutputs)
	}
	switch {
	case (err == nil) != (oracleErr == nil):
		t.Fatalf("decoding %q (header %d): got %v, the former decoder %v", body, headerLen, err, oracleErr)
	case errors.Is(err, ErrTooManyValues) != errors.Is(oracleErr, ErrTooManyValues):
		t.Fatalf("decoding %q: got %v, the former decoder %v", body, err, oracleErr)
	case scanErr != nil && (err.Error() != scanErr.Error() || r.WellFormed):
		t.Fatalf("decoding %q: got %v (well formed %v), the former decoder %v", body, err, r.WellFormed, scanErr)
	case scanErr == nil && (!r.WellFormed || r.Values != o.Values):
		t.Fatalf("decoding %q: well formed %v with %d values, the former decoder counted %d", body, r.WellFormed, r.Values, o.Values)
	case err != nil:
		return
	}
	if !bytes.Equal(r.ID, o.ID) || (r.ID == nil) != (o.ID == nil) || r.Timeout != o.Timeout || r.Priority != o.Priority ||
		r.BinaryOutput != o.BinaryOutput || !slices.Equal(r.Outputs, o.Outputs) {
		t.Fatalf("decoding %q: got %q %v %d %v %v, the former decoder %q %v %d %v %v", body,
			r.ID, r.Timeout, r.Priority, r.BinaryOutput, r.Outputs, o.ID, o.Timeout, o.Priority, o.BinaryOutput, o.Outputs)
	}
	for i := range model {
		a, b := r.Inputs[i], o.Inputs[i]
		if a.DataType != b.DataType || !slices.Equal(a.Shape, b.Shape) || !bytes.Equal(a.Data, b.Data) {
			t.Fatalf("decoding %q: input %q is %s%v % x, the former decoder's %s%v % x", body, model[i].Name,
				a.DataType, a.Shape, a.Data, b.DataType, b.Shape, b.Data)
		}
	}
}

// TestDecodeMatchesFormerDecoder decodes mutations of the seeds, most of
// them broken, with both decoders, under a generous and a tight bound on
// values.
func TestDecodeMatchesFormerDecoder(t *testing.T) {
	type body struct {
		b         []byte
		headerLen int
	}
	var bodies []body
	for _, s := range codecOracleSeeds {
		bodies = append(bodies, body{[]byte(s), -1})
	}
	bodies = append(bodies, body{[]byte(codecOracleHeader + "\x00\x7c\x01\x00\x01\x00"), len(codecOracleHeader)})
	rng := rand.New(rand.NewPCG(3, 4))
	junk := []string{`"NaN"`, `-1`, `1e999`, `[`, `]`, `{`, `}`, `{}`, `[]`, `null`, `"x"`, `99999999999999999999`, `true`, `,`, `:`,
		`"name"`, `"data"`, `"shape"`, `"datatype"`, `"parameters":{"binary_data_size":8},`, `[1,2],`, `0.`, `01`, `-`, `1e`, `"\u00"`, "\xff", ` `}
	seeds := len(bodies)
	for range 10000 {
		seed := bodies[rng.IntN(seeds)]
		b := slices.Clone(seed.b)
		for range 1 + rng.IntN(3) {
			at := rng.IntN(len(b) + 1)
			switch rng.IntN(4) {
			case 0:
				if at < len(b) {
					b[at] = byte(rng.IntN(256))
				}
			case 1:
				b = slices.Insert(b, at, []byte(junk[rng.IntN(len(junk))])...)
			case 2:
				b = append(b[:at:at], b[min(at+1+rng.IntN(8), len(b)):]...)
			case 3:
				b = b[:at]
			}
		}
		headerLen := seed.headerLen
		if headerLen >= 0 {
			headerLen = max(-1, min(len(b), headerLen+len(b)-len(seed.b)))
		}
		bodies = append(bodies, body{b, headerLen})
	}
	for _, b := range bodies {
		for _, model := range codecFuzzModels {
			codecCompareWithOracle(t, b.b, b.headerLen, anyValues, model)
			codecCompareWithOracle(t, b.b, b.headerLen, 12, model)
		}
	}
}

// FuzzDecodeMatchesFormerDecoder is TestDecodeMatchesFormerDecoder's
// comparison on bodies of the fuzzer's making.
func FuzzDecodeMatchesFormerDecoder(f *testing.F) {
	for _, s := range codecOracleSeeds {
		f.Add([]byte(s), -1, uint16(0))
		f.Add([]byte(s), -1, uint16(10))
	}
	f.Add([]byte(codecOracleHeader+"\x00\x7c\x01\x00\x01\x00"), len(codecOracleHeader), uint16(0))
	f.Fuzz(func(t *testing.T, body []byte, headerLen int, maxValues uint16) {
		limit := anyValues
		if maxValues > 0 {
			limit = int(maxValues)
		}
		for _, model := range codecFuzzModels {
			codecCompareWithOracle(t, body, headerLen, limit, model)
		}
	})
}

// codecIsJSONNumber reports whether s is one JSON number and nothing else.
func codecIsJSONNumber(s string) bool {
	if s == "" || s[0] != '-' && (s[0] < '0' || s[0] > '9') {
		return false
	}
	end, err := scanNumber([]byte(s), 0)
	return err == nil && end == len(s)
}

// codecCheckFloats decodes numbers, JSON numbers all, as one FP32 and one
// FP64 input and fails unless every element is what strconv.ParseFloat
// makes of it, and unless those out of range are refused as such.
func codecCheckFloats(t *testing.T, numbers []string) {
	t.Helper()
	for _, bits := range []int{32, 64} {
		dt := runtime.FP32
		if bits == 64 {
			dt = runtime.FP64
		}
		model := []runtime.TensorInfo{{Name: "v", DataType: dt, Shape: []int64{-1}}}
		var want []byte
		var inRange []string
		for _, s := range numbers {
			f, err := strconv.ParseFloat(s, bits)
			if err != nil {
				// Out of range: refused alone, as the old decoder did.
				body := `{"inputs":[{"name":"v","datatype":"` + dt.String() + `","shape":[1],"data":[` + s + `]}]}`
				r := AcquireRequest()
				err := r.Decode([]byte(body), -1, anyValues, model, nil)
				ReleaseRequest(r)
				if wantErr := s + " is out of range for " + dt.String(); err == nil || !strings.Contains(err.Error(), wantErr) {
					t.Fatalf("%s as %s: got %v, want an error containing %q", s, dt, err, wantErr)
				}
				continue
			}
			inRange = append(inRange, s)
			if bits == 32 {
				want = append(want, codecLE(float32(f))...)
			} else {
				want = append(want, codecLE(f)...)
			}
		}
		body := `{"inputs":[{"name":"v","datatype":"` + dt.String() + `","shape":[` + strconv.Itoa(len(inRange)) + `],"data":[` + strings.Join(inRange, ",") + `]}]}`
		r := codecDecode(t, []byte(body), -1, model, nil)
		got := r.Inputs[0].Data
		if bytes.Equal(got, want) {
			continue
		}
		size := dt.Size()
		for k := range inRange {
			if !bytes.Equal(got[k*size:(k+1)*size], want[k*size:(k+1)*size]) {
				t.Fatalf("%s as %s: decoded % x, strconv.ParseFloat % x", inRange[k], dt, got[k*size:(k+1)*size], want[k*size:(k+1)*size])
			}
		}
	}
}

// codecExactDecimal returns the exact decimal text of x, which holds at
// most prec bits.
func codecExactDecimal(x *big.Float) string {
	s := x.Text('e', 1100)
	mantissa, exp, _ := strings.Cut(s, "e")
	mantissa = strings.TrimRight(strings.TrimRight(mantissa, "0"), ".")
	return mantissa + "e" + exp
}

// codecHalfway returns the exact decimal half-way between a and b, and
// that decimal nudged below and above by a unit of its 60th digit.
func codecHalfway(a, b float64) []string {
	x := new(big.Float).SetPrec(2000).SetFloat64(a)
	x.Add(x, new(big.Float).SetPrec(2000).SetFloat64(b))
	x.Quo(x, big.NewFloat(2))
	exact := codecExactDecimal(x)
	nudge := new(big.Float).SetPrec(2000).Abs(x)
	nudge.Mul(nudge, new(big.Float).SetPrec(2000).SetFloat64(1e-60))
	below := new(big.Float).SetPrec(2000).Sub(x, nudge)
	above := new(big.Float).SetPrec(2000).Add(x, nudge)
	return []string{exact, below.Text('e', 70), above.Text('e', 70)}
}

// TestDecodeFloatsMatchStrconv decodes numbers in every JSON form (signs,
// fractions, exponents, many digits, subnormals, half-way cases, overflow)
// and wants each as strconv.ParseFloat rounds it, for FP32 and FP64.
func TestDecodeFloatsMatchStrconv(t *testing.T) {
	numbers := []string{
		"0", "-0", "0.0", "-0.0", "0e0", "0E+5", "0e-400", "1", "-1", "0.1", "1.5", "123456789", "16777216", "16777217",
		"9007199254740993", "1e10", "1e11", "1e22", "1e23", "1e-10", "1e-11", "1e-22", "1e-23", "1E+2", "1e-0",
		"3.4028234663852886e38", "3.4028235677973366e38", "3.4028235677973367e38", "3.40282357e38", "1e39", "-1e39",
		"1.401298464324817e-45", "7.006492321624085e-46", "7.006492321624086e-46", "1e-46", "1.17549435e-38",
		"1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308", "1e309", "-1e309",
		"4.9406564584124654e-324", "2.4703282292062327e-324", "2.4703282292062328e-324", "1e-400", "2.2250738585072011e-308",
		"0.000000000000000000000000000000000000000000001", "100000000000000000000000000000000000000000000000",
		"1234567890123456789012345678901234567890", "0.1234567890123456789012345678901234567890e5",
		"1e100000", "1e-100000", "1e99999999999999999999", "-1e-99999999999999999999",
	}
	rng := rand.New(rand.NewPCG(5, 6))
	digits := func(n int) string {
		b := make([]byte, n)
		for k := range b {
			b[k] = byte('0' + rng.IntN(10))
		}
		if b[0] == '0' && n > 1 {
			b[0] = byte('1' + rng.IntN(9))
		}
		return string(b)
	}
	for range 20000 {
		var b strings.Builder
		if rng.IntN(2) == 0 {
			b.WriteByte('-')
		}
		if rng.IntN(4) == 0 {
			b.WriteString("0")
		} else {
			b.WriteString(digits(1 + rng.IntN(12)))
		}
		if rng.IntN(2) == 0 {
			b.WriteString("." + digits(1+rng.IntN(20)))
		}
		if rng.IntN(2) == 0 {
			b.WriteString([]string{"e", "E", "e+", "e-", "E-"}[rng.IntN(5)])
			b.WriteString(strconv.Itoa(rng.IntN(340)))
		}
		numbers = append(numbers, b.String())
	}
	for range 2000 {
		// float32 neighbours, normal and subnormal, and their half-way points.
		bits := rng.Uint32N(0x7f7fffff)
		if rng.IntN(4) == 0 {
			bits = rng.Uint32N(0x00800000)
		}
		a := math.Float32frombits(bits)
		next := math.Nextafter32(a, float32(math.Inf(1)))
		numbers = append(numbers, strconv.FormatFloat(float64(a), 'g', -1, 32))
		numbers = append(numbers, codecHalfway(float64(a), float64(next))...)
		// float64 likewise.
		b64 := rng.Uint64N(0x7fefffffffffffff)
		if rng.IntN(4) == 0 {
			b64 = rng.Uint64N(0x0010000000000000)
		}
		d := math.Float64frombits(b64)
		numbers = append(numbers, strconv.FormatFloat(d, 'g', -1, 64))
		numbers = append(numbers, codecHalfway(d, math.Nextafter(d, math.Inf(1)))...)
	}
	for _, s := range numbers {
		if !codecIsJSONNumber(s) {
			t.Fatalf("BUG: %q is not a JSON number", s)
		}
	}
	codecCheckFloats(t, numbers)
}

// FuzzDecodeFloats wants every JSON number of the fuzzer's making decoded
// as strconv.ParseFloat rounds it, for FP32 and FP64.
func FuzzDecodeFloats(f *testing.F) {
	for _, s := range []string{"0", "-0", "1.5", "1e39", "3.4028235677973366e38", "1e-46", "4.9406564584124654e-324",
		"1.7976931348623159e308", "9007199254740993", "0.1234567890123456789012345678901234567890e5", "1e-100000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if codecIsJSONNumber(s) {
			codecCheckFloats(t, []string{s})
		}
	})
}
