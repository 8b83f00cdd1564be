// Command kubectl-migrate is the kubectl plugin of ms2m: `kubectl migrate`.
package main

import "github.com/ms2m/ms2m/internal/cli"

func main() { cli.Main() }
