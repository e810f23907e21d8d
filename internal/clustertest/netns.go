package clustertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// LAN is a virtual LAN of network namespaces for tests that need real
// network behaviour between hosts, multicast (mDNS) included: one bridge
// namespace and n host namespaces, host i having eth0 with 10.77.0.(i+1)/24
// and a route for 224.0.0.0/4, as ../../shared/NETNS.md describes. Nothing
// touches the machine's own namespace; everything is removed when the test
// ends, failed or not.
type LAN struct {
	t      testing.TB
	prefix string // namespace name prefix, unique per run

	mu    sync.Mutex
	hosts int
}

// NewLAN creates a bridge namespace and n host namespaces. It skips the test
// when not root or when the ip command is missing, but fails it instead when
// the CI environment variable is set, since CI must run these tests.
func NewLAN(t testing.TB, n int) *LAN {
	t.Helper()
	if n < 1 || n > 250 {
		t.Fatalf("clustertest: NewLAN with %d hosts: want 1-250", n)
	}
	var why string
	if os.Geteuid() != 0 {
		why = "network namespaces need root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "network namespaces need the ip command (iproute2)"
	}
	if why != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("clustertest: %s, and CI must run this test", why)
		}
		t.Skipf("clustertest: %s; skipping", why)
	}
	suffix := make([]byte, 2)
	_, _ = rand.Read(suffix)
	l := &LAN{t: t, prefix: fmt.Sprintf("chatrt%d%s", os.Getpid(), hex.EncodeToString(suffix))}
	t.Cleanup(l.cleanup) // registered first: removes whatever was made, even half-way
	l.ip("netns", "add", l.bridge())
	l.ip("-n", l.bridge(), "link", "add", "br0", "type", "bridge")
	l.ip("-n", l.bridge(), "link", "set", "br0", "up")
	for i := range n {
		ns, veth := l.Namespace(i), l.veth(i)
		l.ip("netns", "add", ns)
		l.mu.Lock()
		l.hosts = i + 1
		l.mu.Unlock()
		// Made inside the bridge namespace with its peer put straight into
		// the host's, so no interface ever appears in the machine's own.
		l.ip("-n", l.bridge(), "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
		l.ip("-n", l.bridge(), "link", "set", veth, "master", "br0", "up")
		l.ip("-n", ns, "addr", "add", l.Addr(i)+"/24", "dev", "eth0")
		l.ip("-n", ns, "link", "set", "eth0", "up")
		l.ip("-n", ns, "link", "set", "lo", "up")
		l.ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
	}
	return l
}

// Addr is host i's IPv4 address, 10.77.0.(i+1); i counts from 0.
func (l *LAN) Addr(i int) string { return fmt.Sprintf("10.77.0.%d", i+1) }

// Namespace is the name of host i's network namespace.
func (l *LAN) Namespace(i int) string { return fmt.Sprintf("%sh%d", l.prefix, i) }

func (l *LAN) bridge() string { return l.prefix + "br" }

// veth is host i's link in the bridge namespace.
func (l *LAN) veth(i int) string { return fmt.Sprintf("v%d", i) }

// Command prepares name args... to run inside host i's namespace (with
// "ip netns exec"), in its own process group; the LAN kills every process
// of its namespaces when the test ends. The caller starts it and may Wait
// for it.
func (l *LAN) Command(i int, name string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.Namespace(i), name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// Cut takes host i's link down at the bridge: it can reach no one and no
// one can reach it, while its own interface stays up.
func (l *LAN) Cut(i int) { l.ip("-n", l.bridge(), "link", "set", l.veth(i), "down") }

// Heal brings host i's link back up.
func (l *LAN) Heal(i int) { l.ip("-n", l.bridge(), "link", "set", l.veth(i), "up") }

// CutPair cuts the link between hosts i and j only, a partial partition:
// each drops what it would send to the other (a blackhole route), while
// both still reach every other host. HealPair undoes it.
func (l *LAN) CutPair(i, j int) {
	l.ip("-n", l.Namespace(i), "route", "add", "blackhole", l.Addr(j)+"/32")
	l.ip("-n", l.Namespace(j), "route", "add", "blackhole", l.Addr(i)+"/32")
}

// HealPair restores the link between hosts i and j that CutPair cut.
func (l *LAN) HealPair(i, j int) {
	l.ip("-n", l.Namespace(i), "route", "del", "blackhole", l.Addr(j)+"/32")
	l.ip("-n", l.Namespace(j), "route", "del", "blackhole", l.Addr(i)+"/32")
}

// DialContext returns a dial function (for http.Transport.DialContext)
// whose sockets are made inside host i's namespace, so that a test
// process in the machine's own namespace can reach the LAN's addresses.
// The socket stays in the namespace it was made in.
func (l *LAN) DialContext(i int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
		err = l.inNamespace(i, func() error {
			// FallbackDelay < 0: no parallel dial on another goroutine,
			// which would run in the machine's namespace.
			d := net.Dialer{FallbackDelay: -1}
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}

// inNamespace runs f inside host i's network namespace, on a goroutine
// locked to its OS thread that is never unlocked: the thread is discarded
// when the goroutine ends, so no other goroutine ever runs in the
// namespace. Sockets f makes stay in it.
func (l *LAN) inNamespace(i int, f func() error) error {
	path := "/var/run/netns/" + l.Namespace(i) // where ip netns add puts it
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The main thread is never discarded (the runtime parks it when
			// a goroutine exits locked to it), and it is the thread whose
			// namespace `ip netns pids` reads: leave it where it is. While
			// this goroutine holds it, the nested call runs on another one.
			err := l.inNamespace(i, f)
			runtime.UnlockOSThread()
			done <- err
			return
		}
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- fmt.Errorf("open namespace %s: %w", path, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("enter namespace %s: %w", path, err)
			return
		}
		done <- f()
	}()
	return <-done
}

func (l *LAN) ip(args ...string) {
	l.t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("clustertest: ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// cleanup kills every process in the namespaces, then deletes them (their
// veth ends go with them).
func (l *LAN) cleanup() {
	l.mu.Lock()
	hosts := l.hosts
	l.mu.Unlock()
	names := []string{l.bridge()}
	for i := range hosts {
		names = append(names, l.Namespace(i))
	}
	// Every process started with Command runs inside a namespace (ip netns
	// exec execs it there), so killing what runs in the namespaces kills
	// them all; unlike a saved pid, this never hits a process that reused
	// the number of one already gone.
	for _, ns := range names {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		for _, f := range strings.Fields(string(out)) {
			pid, err := strconv.Atoi(f)
			switch {
			case err != nil || pid <= 1:
			case pid == os.Getpid():
				l.t.Errorf("clustertest: the test process itself is in namespace %s", ns)
			default:
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	for _, ns := range names {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil &&
			!strings.Contains(string(out), "No such file") {
			l.t.Errorf("clustertest: remove namespace %s: %v: %s", ns, err, out)
		}
	}
}
