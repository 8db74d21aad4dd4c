package runtime

// SharedTestEnvironment returns the environment TestMain opened (providers [cuda,
// cpu]), for the external tests of this package.
func SharedTestEnvironment() *Environment { return testEnv }

// CachedBinding reports the binding s caches for these buffers, or nil, as
// an opaque value the external tests compare.
func CachedBinding(s *Session, inputs, outputs []Tensor) any {
	if b := cachedBinding(s, inputs, outputs); b != nil {
		return b
	}
	return nil
}
