package outbox

import (
	"strings"
	"testing"
	"time"
)

func TestTargetValidate(t *testing.T) {
	f := func(tg Target, wantErr string) {
		t.Helper()
		err := tg.Validate("webhooks[2]")
		if wantErr == "" {
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			return
		}
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("got error %v, want one containing %q", err, wantErr)
		}
	}
	ok := Target{Name: "ci", URL: "https://ci.example/hook"}
	f(ok, "")
	f(Target{Name: "gh", URL: "https://api.github.com/repos/o/r/dispatches", Format: FormatGitHubDispatch, TokenEnv: "GH_TOKEN",
		Events: []string{"drift.detected", TypeRetrainFailed}}, "")
	f(Target{URL: ok.URL}, "webhooks[2].name: must be letters")
	f(Target{Name: "a b", URL: ok.URL}, "webhooks[2].name")
	f(Target{Name: "ci"}, "webhooks[2].url")
	f(Target{Name: "ci", URL: "ftp://x/y"}, "webhooks[2].url")
	f(Target{Name: "ci", URL: "/relative"}, "webhooks[2].url")
	f(Target{Name: "ci", URL: ok.URL, Events: []string{"drift.detected", "drift.detcted"}}, `webhooks[2].events[1]: unknown event type "drift.detcted"`)
	f(Target{Name: "ci", URL: ok.URL, Format: "slack"}, "webhooks[2].format")
	f(Target{Name: "ci", URL: ok.URL, Format: FormatGitHubDispatch}, "webhooks[2].token_env")
	f(Target{Name: "ci", URL: ok.URL, Timeout: -time.Second}, "webhooks[2].timeout")
	f(Target{Name: "ci", URL: ok.URL, MaxAttempts: -1}, "webhooks[2].max_attempts")
	f(Target{Name: "ci", URL: ok.URL, BackoffBase: -1}, "webhooks[2].backoff_base")
	f(Target{Name: "ci", URL: ok.URL, BackoffBase: time.Hour}, "webhooks[2].backoff_max")

	d := ok.WithDefaults()
	if d.Format != FormatCloudEvents || d.Timeout != 10*time.Second || d.MaxAttempts != 8 ||
		d.BackoffBase != time.Second || d.BackoffMax != 5*time.Minute {
		t.Fatalf("unexpected defaults %+v", d)
	}
}

func TestValidateTargetsUniqueNames(t *testing.T) {
	err := ValidateTargets("webhooks", []Target{
		{Name: "a", URL: "http://a/"}, {Name: "b", URL: "http://b/"}, {Name: "a", URL: "http://c/"},
	})
	if err == nil || !strings.Contains(err.Error(), `webhooks[2].name: "a" is also the name of webhooks[0]`) {
		t.Fatalf("got %v", err)
	}
}
