package node

import (
	"fmt"
	"net"
)

// listenAdmin binds the admin listener (--admin-http), or nothing when it
// is off (addr "").
func listenAdmin(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (--admin-http: metrics, profiles; give another address, or off): %w", addr, err)
	}
	return ln, nil
}

func closeAdmin(ln net.Listener) {
	if ln != nil {
		ln.Close()
	}
}

// AdminAddr is the address the admin listener is bound to, "" when it is
// off.
func (n *Node) AdminAddr() string {
	if n.admin == nil {
		return ""
	}
	return n.admin.Addr().String()
}

// printAdmin says on the console where the admin listener is.
func (n *Node) printAdmin() {
	if n.admin == nil {
		fmt.Fprintf(n.console, "admin listener off (--admin-http off): no /metrics, no profiles\n")
		return
	}
	fmt.Fprintf(n.console, "admin (metrics, profiles, cluster view) on http://%s\n", n.AdminAddr())
}
