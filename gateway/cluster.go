package gateway

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/infergate/infergate/retrain/engine"
)

// ClusterConfig is the `cluster:` section: where the gateway's state lives
// and how the replicas of a fleet agree. Without nats_url a gateway with a
// state_dir runs the embedded engine, alone.
type ClusterConfig struct {
	engine.Config `yaml:",inline"`
	// Replica names this gateway among the fleet's (default: the host
	// name); every event, log line and metric of the fleet says which.
	Replica string `yaml:"replica"`
	// LeaseTTL is how long leadership lasts without a renewal: the time a
	// fleet goes without a leader after the leader dies (default 5s).
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// ReportInterval is how often each replica reports its heartbeat, its
	// canary counters and its drift counts (default 1s).
	ReportInterval time.Duration `yaml:"report_interval"`
	// Grace is how long after its last report a replica counts as
	// present (default 3 report intervals).
	Grace time.Duration `yaml:"grace"`
	// BatchJobs makes the replica score chunks of the fleet's batch jobs
	// (`infergate score --fleet`) below every online request.
	BatchJobs bool `yaml:"batch_jobs"`
}

// withDefaults fills the zero settings of c.
func (c ClusterConfig) withDefaults() ClusterConfig {
	if c.Replica == "" {
		host, _ := os.Hostname()
		// A host name may hold dots (a domain): each becomes '-'.
		c.Replica = strings.Map(func(r rune) rune {
			if engine.ValidToken(string(r)) {
				return r
			}
			return '-'
		}, host)
		if c.Replica == "" {
			c.Replica = "gateway"
		}
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 5 * time.Second
	}
	if c.ReportInterval == 0 {
		c.ReportInterval = time.Second
	}
	if c.Grace == 0 {
		c.Grace = 3 * c.ReportInterval
	}
	return c
}

// validate reports the first invalid setting of c, naming its key.
func (c ClusterConfig) validate() error {
	if err := c.Config.Validate("cluster"); err != nil {
		return err
	}
	c = c.withDefaults()
	switch {
	case !engine.ValidToken(c.Replica):
		return fmt.Errorf("cluster.replica: %q may hold only letters, digits, '-' and '_'", c.Replica)
	case c.LeaseTTL < time.Second || c.LeaseTTL%time.Second != 0:
		return fmt.Errorf("cluster.lease_ttl: must be whole seconds, at least 1s (the engine expires keys by the second), got %s", c.LeaseTTL)
	case c.ReportInterval <= 0 || c.ReportInterval > c.LeaseTTL:
		return fmt.Errorf("cluster.report_interval: must be positive and at most lease_ttl (%s), got %s", c.LeaseTTL, c.ReportInterval)
	case c.Grace < c.ReportInterval:
		return fmt.Errorf("cluster.grace: must be at least report_interval (%s), got %s", c.ReportInterval, c.Grace)
	}
	return nil
}
