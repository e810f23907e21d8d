package clustertest

import (
	"os/exec"
	"strings"
	"testing"
)

func TestLAN(t *testing.T) {
	var names []string
	t.Run("make", func(t *testing.T) {
		l := NewLAN(t, 2)
		names = []string{l.bridge(), l.Namespace(0), l.Namespace(1)}
		for i := range 2 {
			out, err := l.Command(i, "ip", "-o", "-4", "addr", "show", "dev", "eth0").CombinedOutput()
			if err != nil || !strings.Contains(string(out), l.Addr(i)+"/24") {
				t.Fatalf("host %d eth0: %v: %s", i, err, out)
			}
			out, err = l.Command(i, "ip", "route", "show", "224.0.0.0/4").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "dev eth0") {
				t.Fatalf("host %d multicast route: %v: %s", i, err, out)
			}
		}
		state := func() string {
			out, _ := exec.Command("ip", "-n", l.bridge(), "-o", "link", "show", l.veth(1)).CombinedOutput()
			return string(out)
		}
		l.Cut(1)
		if s := state(); strings.Contains(s, ",UP") {
			t.Fatalf("after Cut: %s", s)
		}
		l.Heal(1)
		if s := state(); !strings.Contains(s, ",UP") {
			t.Fatalf("after Heal: %s", s)
		}
		// A process left running is killed at cleanup.
		if err := l.Command(0, "sleep", "60").Start(); err != nil {
			t.Fatal(err)
		}
	})
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s left behind: %s", n, out)
		}
	}
}
