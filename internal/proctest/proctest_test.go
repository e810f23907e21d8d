package proctest

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestBufferConcurrentWrites(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprintf(&b, "%d\n", i)
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if n := strings.Count(b.String(), "\n"); n != 800 {
		t.Fatalf("%d lines, want 800", n)
	}
}

func TestEventually(t *testing.T) {
	var calls int
	took := Eventually(t, 5*time.Second, func() error {
		calls++
		if calls < 3 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	})
	if calls != 3 {
		t.Fatalf("cond called %d times, want 3", calls)
	}
	if took < 2*firstPoll {
		t.Errorf("took %v, less than the two polls it waited", took)
	}

	// A condition that never holds fails the test with its last error.
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	calls = 0
	go func() {
		defer close(done)
		Eventually(rec, 50*time.Millisecond, func() error { calls++; return fmt.Errorf("still not, call %d", calls) })
	}()
	<-done
	if want := fmt.Sprintf("still not, call %d", calls); !strings.Contains(rec.msg, want) || !strings.Contains(rec.msg, "50ms") {
		t.Errorf("failed with %q, want the deadline and the last error %q", rec.msg, want)
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as testing.T's does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestFreeAddr(t *testing.T) {
	l, err := net.Listen("tcp", FreeAddr(t))
	if err != nil {
		t.Fatalf("listen on the free address: %v", err)
	}
	l.Close()
}

func start(t *testing.T, cmd *exec.Cmd) *Process {
	t.Helper()
	p, err := Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	return p
}

func TestStopAndKill(t *testing.T) {
	p := start(t, exec.Command("sleep", "30"))
	if !p.Running() {
		t.Fatal("sleep is not running")
	}
	if p.Wait(20 * time.Millisecond) {
		t.Fatal("Wait reports the end of a sleep that runs")
	}
	if !p.Stop(10 * time.Second) {
		t.Fatal("sleep did not end on SIGTERM")
	}
	if p.Running() || p.Cmd.ProcessState == nil {
		t.Fatal("Stop returned before the process ended")
	}

	p = start(t, exec.Command("sleep", "30"))
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if ws := p.Cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signal() != syscall.SIGKILL {
		t.Fatalf("ended with %v, want SIGKILL", p.Cmd.ProcessState)
	}
}

func TestStopKillsWhatIgnoresSIGTERM(t *testing.T) {
	cmd := exec.Command("sh", "-c", `trap "" TERM; echo ready; sleep 30`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out Buffer
	cmd.Stdout = &out
	p := start(t, cmd)
	Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(out.String(), "ready") {
			return fmt.Errorf("sh has not trapped SIGTERM yet (it printed %q)", out.String())
		}
		return nil
	})
	if p.Stop(100 * time.Millisecond) {
		t.Fatal("Stop reports a clean end of a process that ignores SIGTERM")
	}
	if p.Running() {
		t.Fatal("still running after Stop")
	}
}

func TestWaitReady(t *testing.T) {
	var polls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || polls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	p := start(t, exec.Command("sleep", "30"))
	if err := p.WaitReady(srv.URL, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := polls.Load(); n != 3 {
		t.Errorf("%d polls, want 3", n)
	}

	polls.Store(-1000)
	if err := p.WaitReady(srv.URL, 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("WaitReady on a node that stays unready: %v, want an error naming the 503", err)
	}

	gone := start(t, exec.Command("true"))
	if !gone.Wait(10*time.Second) || !gone.Cmd.ProcessState.Success() {
		t.Fatalf("true did not end with 0: %v", gone.Cmd.ProcessState)
	}
	if err := gone.WaitReady(srv.URL, 10*time.Second); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("WaitReady on an ended process: %v, want an error saying it exited", err)
	}
}

func TestRun(t *testing.T) {
	var p *Process
	t.Run("sh", func(t *testing.T) {
		p = Run(t, "sh", exec.Command("sh", "-c", `echo out; echo err >&2; exec sleep 30`))
		Eventually(t, 10*time.Second, func() error {
			if p.Stdout.String() != "out\n" || p.Stderr.String() != "err\n" {
				return fmt.Errorf("stdout %q, stderr %q; want out and err", p.Stdout.String(), p.Stderr.String())
			}
			return nil
		})
	})
	if p.Running() {
		t.Fatal("the process still runs after its test ended")
	}
	if ws := p.Cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signal() != syscall.SIGTERM {
		t.Fatalf("ended with %v, want SIGTERM", p.Cmd.ProcessState)
	}
}
