// Command etcd runs the etcd 3.6 server from its Go module; the upstream server module carries
// replace directives that make `go install` refuse it, which a dependency ignores.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
