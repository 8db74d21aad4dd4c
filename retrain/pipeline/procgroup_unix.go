//go:build unix

package pipeline

import (
	"os/exec"
	"syscall"
)

// killGroup makes cmd the leader of a process group, and its cancellation
// kill the whole group, so that a timed-out training script's children do
// not outlive it.
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}
