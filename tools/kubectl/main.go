// Command kubectl is upstream kubectl built from its Go module, so the client matches the test control
// plane's minor version (the npm layer we take helm from only ships kubectl 1.36).
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
