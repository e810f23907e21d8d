package proctest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Process is a command started by Start or Run.
type Process struct {
	Cmd *exec.Cmd
	// Stdout and Stderr hold what the process wrote, if Run started it.
	Stdout, Stderr Buffer

	exited chan struct{} // closed once Cmd.Wait has returned
}

// stopGrace is how long Run's cleanup lets a process drain after SIGTERM
// before it kills it; an idle chatr drains in well under a second.
const stopGrace = 10 * time.Second

// logLines is how much of each of a process's streams Run logs: the end,
// where a failure shows.
const logLines = 150

// Run starts cmd for the test t, with its output in p.Stdout and p.Stderr
// (set cmd.Stdin or take cmd.StdinPipe before), and stops it when the test
// ends. name says which process it is in messages. At the end a process
// that still runs gets SIGTERM, and SIGKILL 10 s later, which fails the
// test (with Setpgid in cmd.SysProcAttr, its whole process group). If the
// test failed, or CHATR_TEST_LOGS is set, the end of its output is logged.
func Run(t testing.TB, name string, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{}
	cmd.Stdout, cmd.Stderr = &p.Stdout, &p.Stderr
	if err := p.start(cmd); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		if !p.Stop(stopGrace) {
			t.Errorf("%s did not stop within %v of SIGTERM; killed it", name, stopGrace)
		}
		if t.Failed() || os.Getenv("CHATR_TEST_LOGS") != "" {
			t.Logf("---- %s (%s), %v, stdout ----\n%s", name, strings.Join(cmd.Args, " "), cmd.ProcessState, tail(p.Stdout.String(), logLines))
			t.Logf("---- %s stderr ----\n%s", name, tail(p.Stderr.String(), logLines))
		}
	})
	return p
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

// Start starts cmd and waits for its end in the background, so that
// Exited can tell when it has ended. Set cmd's output before.
func Start(cmd *exec.Cmd) (*Process, error) {
	p := &Process{}
	if err := p.start(cmd); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Process) start(cmd *exec.Cmd) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	p.Cmd, p.exited = cmd, make(chan struct{})
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	return nil
}

// Exited is closed once the process has ended; Cmd.ProcessState then says
// how.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Wait waits at most d for the process to end, and reports whether it did;
// Cmd.ProcessState then says how.
func (p *Process) Wait(d time.Duration) bool {
	select {
	case <-p.exited:
		return true
	case <-time.After(d):
		return false
	}
}

// Running reports whether the process has not ended yet.
func (p *Process) Running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Kill ends the process with SIGKILL, a crash with no chance to clean up,
// and waits until it is gone.
func (p *Process) Kill() error {
	if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.exited
	return nil
}

// Stop sends SIGTERM, which lets chatr drain, and waits until the process
// has ended. If it still runs after grace, Stop kills it with SIGKILL (its
// whole process group when it was started with Setpgid) and reports false.
func (p *Process) Stop(grace time.Duration) bool {
	if !p.Running() {
		return true
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return true
	case <-time.After(grace):
	}
	if a := p.Cmd.SysProcAttr; a != nil && a.Setpgid {
		_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	} else {
		_ = p.Cmd.Process.Kill()
	}
	<-p.exited
	return false
}

// WaitReady polls base+"/readyz" until it answers 200. It returns an error
// if the process ends first, or if it is not ready within timeout.
func (p *Process) WaitReady(base string, timeout time.Duration) error {
	return p.WaitReadyVia(http.DefaultClient, base, timeout)
}

// readyPollTimeout bounds one /readyz request of WaitReady.
const readyPollTimeout = time.Second

// WaitReadyVia is WaitReady with requests made by hc, e.g. a client whose
// sockets are made inside a network namespace.
func (p *Process) WaitReadyVia(hc *http.Client, base string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("exited (%v) before it was ready", p.Cmd.ProcessState)
		default:
		}
		err := readyOnce(hc, base)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready on %s after %v (last: %v)", base, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readyOnce(hc *http.Client, base string) error {
	ctx, cancel := context.WithTimeout(context.Background(), readyPollTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz answered %s", resp.Status)
	}
	return nil
}
