package clustertest

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
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

// TestLANDialAndCutPair: a socket dialed with DialContext from host 2
// reaches a listener made in host 0's namespace (which the machine's own
// namespace cannot); CutPair(0, 2) stops that while host 1 still reaches
// both; HealPair restores it.
func TestLANDialAndCutPair(t *testing.T) {
	l := NewLAN(t, 3)
	var ln net.Listener
	if err := l.inNamespace(0, func() (err error) {
		ln, err = net.Listen("tcp", l.Addr(0)+":7000")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	reach := func(from int) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := l.DialContext(from)(ctx, "tcp", l.Addr(0)+":7000")
		if err != nil {
			return err
		}
		defer c.Close()
		b, err := io.ReadAll(c)
		if err == nil && string(b) != "hi" {
			err = fmt.Errorf("read %q", b)
		}
		return err
	}
	for _, from := range []int{1, 2} {
		if err := reach(from); err != nil {
			t.Fatalf("host %d dials host 0: %v", from, err)
		}
	}
	l.CutPair(0, 2)
	if err := reach(2); err == nil {
		t.Fatal("host 2 reaches host 0 across CutPair(0, 2)")
	}
	if err := reach(1); err != nil {
		t.Fatalf("host 1 dials host 0 after CutPair(0, 2): %v", err)
	}
	l.HealPair(0, 2)
	if err := reach(2); err != nil {
		t.Fatalf("host 2 dials host 0 after HealPair: %v", err)
	}
}
