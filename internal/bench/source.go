package bench

import (
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// A TCP client gets its source port from the ephemeral range, which holds
// about 28k ports on Linux (ip_local_port_range), and tens of thousands at
// most anywhere. Past that many connections to loopback nodes, bench binds
// each group of connections to its own source address 127.0.0.1,
// 127.0.0.2, ..., each with a whole port range of its own.

// sourceAddrs returns the source address of each group of perSource
// connections, or nil when all connections can use the default one.
func sourceAddrs(urls []string, conns int) (addrs []net.IP, perSource int) {
	perSource = portsPerSource()
	if conns <= perSource || !allLoopbackV4(urls) {
		return nil, perSource
	}
	n := (conns + perSource - 1) / perSource
	for k := 0; k < n && k < 254; k++ {
		addrs = append(addrs, net.IPv4(127, 0, 0, byte(k+1)))
	}
	return addrs, perSource
}

// portsPerSource is how many connections bench opens from one source
// address: the ephemeral port range less a margin for other sockets.
func portsPerSource() int {
	const fallback = 28000
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return fallback
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return fallback
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || hi-lo < 2048 {
		return fallback
	}
	return hi - lo + 1 - 1024
}

// allLoopbackV4 reports whether every URL names an IPv4 loopback address
// (a name like localhost may resolve to ::1, where 127.0.0.x cannot go).
func allLoopbackV4(urls []string) bool {
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil {
			return false
		}
		ip := net.ParseIP(u.Hostname())
		if ip == nil || ip.To4() == nil || !ip.IsLoopback() {
			return false
		}
	}
	return true
}
