package gateway

import (
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/infergate/infergate/gateway/v2codec/inferencepb"
)

// TestAppendTritonJSON: what appendTritonJSON writes is protobuf's JSON
// mapping (protojson reads it back into an equal message), with the
// .proto's names, 64-bit integers as numbers, floats at their own
// precision, bytes in base64, map keys in order and unset oneofs and
// messages left out.
func TestAppendTritonJSON(t *testing.T) {
	f := func(m proto.Message, want ...string) {
		t.Helper()
		got := string(appendTritonJSON(nil, m.ProtoReflect()))
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("%s lacks %s", got, w)
			}
		}
		back := m.ProtoReflect().New().Interface()
		if err := protojson.Unmarshal([]byte(got), back); err != nil {
			t.Fatalf("protojson cannot read %s: %v", got, err)
		}
		if !proto.Equal(back, m) {
			t.Errorf("%s reads back as %v, want %v", got, back, m)
		}
	}
	f(&inferencepb.InferParameter{}, "{}")
	f(&inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_DoubleParam{DoubleParam: math.Inf(-1)}}, `{"double_param":"-Infinity"}`)
	f(&inferencepb.InferParameter{ParameterChoice: &inferencepb.InferParameter_Uint64Param{Uint64Param: math.MaxUint64}}, `{"uint64_param":18446744073709551615}`)
	f(&inferencepb.InferTensorContents{Fp32Contents: []float32{0.1, -2}, Int64Contents: []int64{math.MinInt64}, BytesContents: [][]byte{{0xff}, []byte("a\"b")}},
		`"fp32_contents":[0.1,-2]`, `"int64_contents":[-9223372036854775808]`, `"bytes_contents":["/w==","YSJi"]`, `"bool_contents":[]`)
	f(&inferencepb.ModelDynamicBatching{PriorityQueuePolicy: map[uint64]*inferencepb.ModelQueuePolicy{10: {MaxQueueSize: 3}, 2: {TimeoutAction: inferencepb.ModelQueuePolicy_DELAY}}},
		`"priority_queue_policy":{"10":{"timeout_action":"REJECT","default_timeout_microseconds":0,"allow_timeout_override":false,"max_queue_size":3},"2":{"timeout_action":"DELAY",`,
		`"preserve_ordering":false,`)
	f(&inferencepb.ModelConfig{Name: "q\"\n", Parameters: map[string]*inferencepb.ModelParameter{"b": {StringValue: "x"}, "a": {}}},
		`{"name":"q\"\n",`, `"parameters":{"a":{"string_value":""},"b":{"string_value":"x"}}`)
	if got := string(appendTritonJSON(nil, (&inferencepb.ModelConfig{}).ProtoReflect())); strings.Contains(got, "dynamic_batching") || strings.Contains(got, "response_cache") {
		t.Errorf("unset oneof and message written: %s", got)
	}
}
