// Command natsnode is one nats-server of a JetStream cluster on 127.0.0.1,
// as the tests run it (natstest.Serve: file store, sync_interval: always),
// for scripts/bench.sh's runs of the NATS engine. It stops at SIGINT or
// SIGTERM.
//
//	natsnode -name n1 -port 4301 -cluster-port 6301 -http-port 8301 -store DIR \
//	  -routes nats://127.0.0.1:6301,nats://127.0.0.1:6302,nats://127.0.0.1:6303
package main

import (
	"flag"
	"fmt"
	"os"

	"chatr/internal/natstest"
)

func main() {
	o := natstest.ServerOptions{UntilSignal: true}
	flag.StringVar(&o.Name, "name", "n1", "server name, unique in the cluster")
	flag.IntVar(&o.Port, "port", 4222, "client port on 127.0.0.1")
	flag.IntVar(&o.ClusterPort, "cluster-port", 0, "route port on 127.0.0.1 (0: no cluster)")
	flag.StringVar(&o.ClusterName, "cluster", "chatrbench", "cluster name")
	flag.StringVar(&o.Routes, "routes", "", "comma-separated nats://127.0.0.1:PORT of every server's route port")
	flag.StringVar(&o.StoreDir, "store", "", "JetStream store directory (required)")
	flag.IntVar(&o.HTTPPort, "http-port", 0, "monitoring port on 127.0.0.1 (/jsz; 0: none)")
	flag.Parse()
	if o.StoreDir == "" {
		fmt.Fprintln(os.Stderr, "natsnode: -store is required")
		os.Exit(2)
	}
	if err := natstest.Serve(o); err != nil {
		fmt.Fprintln(os.Stderr, "natsnode:", err)
		os.Exit(1)
	}
}
