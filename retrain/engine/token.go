package engine

import (
	"encoding/base64"
	"strings"
)

// Token is name as one token of a subject, a key or a stream name: itself
// when it is letters, digits, '-' and '_', else "=" and its base64url
// encoding. Model and replica names go through it wherever they name
// engine state.
func Token(name string) string {
	if ValidToken(name) {
		return name
	}
	return "=" + base64.RawURLEncoding.EncodeToString([]byte(name))
}

// ParseToken inverts Token.
func ParseToken(token string) (string, bool) {
	enc, ok := strings.CutPrefix(token, "=")
	if !ok {
		return token, ValidToken(token)
	}
	b, err := base64.RawURLEncoding.DecodeString(enc)
	return string(b), err == nil
}

// ValidToken reports whether s may be one token of a subject, a key or a
// stream name as it is: letters, digits, '-' and '_'.
func ValidToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
