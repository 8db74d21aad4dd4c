package outbox

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// The delivery formats of a Target.
const (
	// FormatCloudEvents POSTs the event in CloudEvents structured JSON mode.
	FormatCloudEvents = "cloudevents"
	// FormatGitHubDispatch POSTs {"event_type": <type>, "client_payload":
	// <the event>}, the body of GitHub's repository_dispatch endpoint
	// (https://api.github.com/repos/OWNER/REPO/dispatches).
	FormatGitHubDispatch = "github-dispatch"
)

// Target is one webhook receiver, an entry of the gateway's webhooks list.
// The zero value of each field but Name and URL means its default (see
// WithDefaults). A Target is a plain value, safe to share when nobody
// modifies it.
type Target struct {
	// Name identifies the target in delivery records, metrics, logs and
	// Redrive; letters, digits, '.', '_' and '-' only. Records of pending
	// deliveries refer to it, so keep it across restarts.
	Name string `yaml:"name"`
	// URL is where deliveries are POSTed.
	URL string `yaml:"url"`
	// Events are the types sent to the target, full ("dev.infergate.drift.detected")
	// or short ("drift.detected"); empty sends every event.
	Events []string `yaml:"events"`
	// SecretEnv names the environment variable that holds the HMAC secret of
	// the infergate-signature header. Without it deliveries are unsigned.
	SecretEnv string `yaml:"secret_env"`
	// TokenEnv names the environment variable that holds a bearer token for
	// the Authorization header; the github-dispatch format requires it.
	TokenEnv string `yaml:"token_env"`
	// Format is FormatCloudEvents (the default) or FormatGitHubDispatch.
	Format string `yaml:"format"`
	// Timeout bounds one delivery attempt (default 10s).
	Timeout time.Duration `yaml:"timeout"`
	// MaxAttempts is how many failed attempts dead-letter a delivery
	// (default 8).
	MaxAttempts int `yaml:"max_attempts"`
	// BackoffBase is the retry delay ceiling after the first failed attempt;
	// it doubles with every further one (default 1s). The delay is drawn
	// uniformly below the ceiling (full jitter).
	BackoffBase time.Duration `yaml:"backoff_base"`
	// BackoffMax caps the ceiling (default 5m).
	BackoffMax time.Duration `yaml:"backoff_max"`
}

// WithDefaults returns t with every zero field but Name, URL, Events and the
// environment variable names set to its default.
func (t Target) WithDefaults() Target {
	if t.Format == "" {
		t.Format = FormatCloudEvents
	}
	if t.Timeout == 0 {
		t.Timeout = 10 * time.Second
	}
	if t.MaxAttempts == 0 {
		t.MaxAttempts = 8
	}
	if t.BackoffBase == 0 {
		t.BackoffBase = time.Second
	}
	if t.BackoffMax == 0 {
		t.BackoffMax = 5 * time.Minute
	}
	return t
}

// Validate checks t with its defaults applied; path names t in the errors,
// e.g. "webhooks[0]". It does not look at the environment: Open does.
func (t Target) Validate(path string) error {
	t = t.WithDefaults()
	if t.Name == "" || strings.TrimLeft(t.Name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
		return fmt.Errorf("%s.name: must be letters, digits, '.', '_' or '-', got %q", path, t.Name)
	}
	if u, err := url.Parse(t.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s.url: must be an absolute http or https URL", path)
	}
	for i, name := range t.Events {
		if fullType(name) == "" {
			return fmt.Errorf("%s.events[%d]: unknown event type %q: want one of %s (or without the %q prefix)",
				path, i, name, strings.Join(knownTypes, ", "), typePrefix)
		}
	}
	switch t.Format {
	case FormatCloudEvents:
	case FormatGitHubDispatch:
		if t.TokenEnv == "" {
			return fmt.Errorf("%s.token_env: the %s format needs a bearer token", path, t.Format)
		}
	default:
		return fmt.Errorf("%s.format: must be %s or %s, got %q", path, FormatCloudEvents, FormatGitHubDispatch, t.Format)
	}
	switch {
	case t.Timeout < 0:
		return fmt.Errorf("%s.timeout: must be positive, got %s", path, t.Timeout)
	case t.MaxAttempts < 1:
		return fmt.Errorf("%s.max_attempts: must be at least 1, got %d", path, t.MaxAttempts)
	case t.BackoffBase < 0:
		return fmt.Errorf("%s.backoff_base: must be positive, got %s", path, t.BackoffBase)
	case t.BackoffMax < t.BackoffBase:
		return fmt.Errorf("%s.backoff_max: %s is less than backoff_base (%s)", path, t.BackoffMax, t.BackoffBase)
	}
	return nil
}

// ValidateTargets validates each target, naming it path[i], and checks that
// their names are unique.
func ValidateTargets(path string, targets []Target) error {
	for i, t := range targets {
		if err := t.Validate(fmt.Sprintf("%s[%d]", path, i)); err != nil {
			return err
		}
		for j := range i {
			if targets[j].Name == t.Name {
				return fmt.Errorf("%s[%d].name: %q is also the name of %s[%d]", path, i, t.Name, path, j)
			}
		}
	}
	return nil
}

// wants reports whether the target takes events of type typ.
func (t *Target) wants(typ string) bool {
	if len(t.Events) == 0 {
		return true
	}
	for _, name := range t.Events {
		if fullType(name) == typ {
			return true
		}
	}
	return false
}
