package engine

import (
	"strings"
	"testing"
)

// TestTokenRoundTrip: any name makes one token and back; a name that is a
// token already stays as it is.
func TestTokenRoundTrip(t *testing.T) {
	for _, name := range []string{"demo", "a-b_c", "with.dot", "spaced name", "ünï", "=", "a*b>"} {
		tok := Token(name)
		if rest, encoded := strings.CutPrefix(tok, "="); !ValidToken(rest) || encoded == ValidToken(name) {
			t.Errorf("Token(%q) = %q is not one token", name, tok)
		}
		if got, ok := ParseToken(tok); !ok || got != name {
			t.Errorf("ParseToken(Token(%q)) = %q, %v", name, got, ok)
		}
	}
	if _, ok := ParseToken("=%%"); ok {
		t.Error("ParseToken accepted a broken encoding")
	}
}
