// Command portalctl is the command-line client of portal's gRPC API.
package main

import (
	"os"

	"github.com/portal-lb/portal/cli"
)

func main() {
	os.Exit(cli.Execute())
}
