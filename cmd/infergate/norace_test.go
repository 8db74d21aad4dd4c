//go:build !race

package main

// raceEnabled is set when the tests run under the race detector, which
// slows the gateway processes they start as much as the tests themselves.
const raceEnabled = false
