package gateway

import "github.com/infergate/infergate/retrain/strictyaml"

// Size is a byte count in the config: strictyaml's, shared with the
// retrain service's config. Once config.go names strictyaml.Size and
// strictyaml.Decode itself, this file goes.
type Size = strictyaml.Size

// decodeStrict is strictyaml.Decode, under the name config.go calls.
func decodeStrict(data []byte, dst any, what string) error {
	return strictyaml.Decode(data, dst, what)
}
