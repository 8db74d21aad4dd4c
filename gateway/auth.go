package gateway

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"
)

// AuthConfig names the API keys that models may require for inference and
// feedback (each model's auth section says which). Keys are secrets: they
// come from environment variables or files, never from the config itself,
// and are read again on every reload.
type AuthConfig struct {
	Keys map[string]KeySource `yaml:"keys"`
}

// KeySource says where one API key is read from: an environment variable
// or a file (relative to the config file; surrounding whitespace is
// dropped), exactly one of them.
type KeySource struct {
	Env  string `yaml:"env"`
	File string `yaml:"file"`
}

// ModelAuth is a model's access rule, by the names of keys in auth.keys.
type ModelAuth struct {
	// Infer lists the keys that may call infer; empty leaves inference open.
	Infer []string `yaml:"infer"`
	// Feedback lists the keys that may post labels. Labels decide what
	// retraining learns, so with none feedback is refused, unless
	// OpenFeedback says in so many words that anyone may post them.
	Feedback     []string `yaml:"feedback"`
	OpenFeedback bool     `yaml:"open_feedback"`
}

// minKeyLength keeps keys long enough not to be guessed.
const minKeyLength = 16

func (c AuthConfig) validate() error {
	for _, name := range slices.Sorted(maps.Keys(c.Keys)) {
		src := c.Keys[name]
		if (src.Env == "") == (src.File == "") {
			return fmt.Errorf("auth.keys.%s: set exactly one of env and file", name)
		}
	}
	return nil
}

func (a ModelAuth) validate(prefix string, keys map[string]KeySource) error {
	for _, name := range slices.Concat(a.Infer, a.Feedback) {
		if _, ok := keys[name]; !ok {
			return fmt.Errorf("%s.auth: key %q is not defined under auth.keys", prefix, name)
		}
	}
	if a.OpenFeedback && len(a.Feedback) > 0 {
		return fmt.Errorf("%s.auth: open_feedback and feedback keys contradict each other; keep one", prefix)
	}
	return nil
}

// read returns the key's value.
func (src KeySource) read(name string) ([]byte, error) {
	var key []byte
	if src.Env != "" {
		key = []byte(os.Getenv(src.Env))
	} else {
		data, err := os.ReadFile(src.File)
		if err != nil {
			return nil, fmt.Errorf("cannot read API key %q: %w", name, err)
		}
		key = bytes.TrimSpace(data)
	}
	if len(key) < minKeyLength {
		where := "file " + src.File
		if src.Env != "" {
			where = "environment variable " + src.Env
		}
		return nil, fmt.Errorf("cannot read API key %q: %s holds %d bytes, want at least %d (unset or too short)", name, where, len(key), minKeyLength)
	}
	return key, nil
}

// modelKeys are a model's API keys, read when its state is built.
type modelKeys struct {
	infer, feedback [][]byte
	openFeedback    bool
}

// readModelKeys reads the keys a model's rule names.
func readModelKeys(a ModelAuth, keys map[string]KeySource) (modelKeys, error) {
	mk := modelKeys{openFeedback: a.OpenFeedback}
	for _, list := range []struct {
		names []string
		dst   *[][]byte
	}{{a.Infer, &mk.infer}, {a.Feedback, &mk.feedback}} {
		for _, name := range list.names {
			key, err := keys[name].read(name)
			if err != nil {
				return modelKeys{}, err
			}
			*list.dst = append(*list.dst, key)
		}
	}
	return mk, nil
}

var (
	errNoKey  = errors.New("this endpoint needs an API key: send it as Authorization: Bearer <key>")
	errBadKey = errors.New("the API key is not valid for this model and endpoint")

	authRefusedInfer    = metrics.NewCounter(`infergate_auth_refused_total{endpoint="infer"}`)
	authRefusedFeedback = metrics.NewCounter(`infergate_auth_refused_total{endpoint="feedback"}`)
)

// authorized reports whether the request may call m's infer, or with
// feedback its feedback, answering 401 when not: inference is open unless
// keys are configured for it, feedback closed unless keys are or it is
// open in so many words.
func (m *model) authorized(ctx *fasthttp.RequestCtx, feedback bool) bool {
	switch {
	case !feedback && len(m.keys.infer) == 0, feedback && len(m.keys.feedback) == 0 && m.keys.openFeedback:
		return true
	case !feedback:
		return allowed(ctx, m.keys.infer, authRefusedInfer)
	case len(m.keys.feedback) == 0:
		unauthorized(ctx, feedbackClosed(m.name), authRefusedFeedback)
		return false
	}
	return allowed(ctx, m.keys.feedback, authRefusedFeedback)
}

// allowed reports whether the request's bearer key is one of keys; it
// answers 401 when not.
func allowed(ctx *fasthttp.RequestCtx, keys [][]byte, refused *metrics.Counter) bool {
	present, ok := bearerIn(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization), keys)
	if ok {
		return true
	}
	err := errBadKey
	if !present {
		err = errNoKey
	}
	unauthorized(ctx, err, refused)
	return false
}

// bearerIn reports whether the Authorization header carries a bearer
// token (the scheme in any case, as RFC 9110 has it) and whether it is one
// of keys, comparing with each in constant time.
func bearerIn(authorization []byte, keys [][]byte) (present, ok bool) {
	const scheme = "bearer "
	if len(authorization) < len(scheme) || !bytes.EqualFold(authorization[:len(scheme)], []byte(scheme)) {
		return false, false
	}
	got := authorization[len(scheme):]
	match := 0
	for _, key := range keys {
		match |= subtle.ConstantTimeCompare(got, key)
	}
	return true, match == 1
}

// unauthorized answers 401 with err.
func unauthorized(ctx *fasthttp.RequestCtx, err error, refused *metrics.Counter) {
	refused.Inc()
	ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="infergate"`)
	writeError(ctx, fasthttp.StatusUnauthorized, err.Error())
}

// feedbackClosed is the answer to feedback for a model with no rule for it.
func feedbackClosed(model string) error {
	return fmt.Errorf("feedback for model %q is closed: labels decide what retraining learns, so they need an API key "+
		"(models.%s.auth.feedback) or, in so many words, models.%s.auth.open_feedback: true", model, model, model)
}
