// Command weed is the SeaweedFS server built from its Go module, for the S3 test tier (tests/s3): a real
// S3-compatible server on 127.0.0.1. Upstream's main package (weed/weed.go) cannot be imported, so this repeats
// its dispatch: global flags, then the named subcommand of weed/command with its own flags.
package main

import (
	"fmt"
	"os"
	"testing/fstest"

	"github.com/seaweedfs/seaweedfs/weed/command"
	weed_server "github.com/seaweedfs/seaweedfs/weed/server"
	flag "github.com/seaweedfs/seaweedfs/weed/util/fla9"
	util_http "github.com/seaweedfs/seaweedfs/weed/util/http"
)

func main() {
	weed_server.StaticFS = fstest.MapFS{} // the web UI's assets are embedded by upstream's main only
	flag.Parse()
	args := flag.Args()
	for _, cmd := range command.Commands {
		if len(args) > 0 && cmd.Name() == args[0] && cmd.Run != nil {
			util_http.InitGlobalHttpClient()
			cmd.Flag.Parse(args[1:])
			if !cmd.Run(cmd, cmd.Flag.Args()) {
				cmd.Flag.PrintDefaults()
				os.Exit(1)
			}
			os.Exit(command.CommandExitStatus())
		}
	}
	fmt.Fprintf(os.Stderr, "usage: weed <command> [flags] (for example: weed mini -dir=DIR)\n")
	os.Exit(2)
}
