//go:build !linux

package natscluster

import "syscall"

// sysProcAttr is nil where the kernel cannot kill a server with the test
// process that started it: only cleanup kills them there.
func sysProcAttr() *syscall.SysProcAttr { return nil }
