// Package natscluster runs real NATS clusters for tests: n nats-server
// processes clustered on loopback, JetStream on, each with its own file
// store under the test's temporary folder and every write synced, so that a
// fleet test can SIGKILL, stop and restart servers under load and see what
// a fleet of infergate replicas would see.
//
// It is imported only by tests, like enginetest. The servers are the
// nats-server binary that `make nats-server` builds from the version go.mod
// pins into .cache/bin/nats-server, or the one $INFERGATE_NATS_SERVER names;
// without it a test fails and says so, it never skips.
//
// A Cluster is safe for concurrent use; its methods call t.Fatal, so they
// belong on the test's goroutine.
package natscluster
