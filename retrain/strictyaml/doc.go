// Package strictyaml decodes the project's YAML config files strictly: one
// document, not empty, every key known to the Go type it fills and given
// once, every value of the right type, with each problem named by its dotted
// path and line. Durations are Go durations (yaml.v3's own rule); Size is the
// byte count with units that configs use.
//
// The gateway's config and the retrain service's config both decode through
// Decode, so both refuse and word problems alike. It lives under retrain
// because both may import it there (DESIGN.md: gateway imports retrain, and
// retrain imports neither gateway nor a util package).
//
// Decode keeps no state between calls and is safe for concurrent use with
// distinct destinations; Size is a plain value.
package strictyaml
