// Package engine connects infergate's processes to its state engine, NATS
// JetStream: it starts the embedded JetStream server of one machine (file
// store under state_dir, loopback only, credentials generated at first
// start and kept in state_dir), or connects to a fleet's NATS cluster from
// the `cluster:` section of a config; and it names the streams and buckets
// that the gateway, the retrain service and the command line share.
//
// It lives under retrain, the lowest package that the gateway, the retrain
// pipeline and the outbox may all import; cmd/infergate decides which of
// the two a process gets.
//
// A start of the embedded server checks its store first and refuses a
// damaged one, saying what is damaged and how to recover (storecheck.go
// has what NATS does with each kind of damage).
//
// An Embedded server and a Conn are safe for concurrent use.
package engine
