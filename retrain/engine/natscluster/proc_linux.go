package natscluster

import "syscall"

// sysProcAttr has the kernel kill a server when the test process that
// started it dies (a panic, a timeout), so that none outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
