// Package statefile opens the bbolt files that keep infergate's state (the
// gateway's routing and outbox, the retrain service's runs and outbox) only
// after checking them whole, so that a damaged file is refused with an error
// that names it, says what is damaged and how to recover, instead of a panic
// inside bbolt or a silent start from empty state.
//
// It lives under retrain because the outbox, retrain's, is what both files
// share, and retrain is the lowest package that both the gateway and the
// retrain pipeline may import.
//
// Open is safe for concurrent use on different files; a file is locked by
// bbolt against a second opener, in this process or another.
package statefile
