package runtimehandler

import (
	"fmt"
	"strings"
)

// Invocation is one command line the container runtime's shim gave us,
// as runc would read it: global options, the command, its options and the
// container ID.
type Invocation struct {
	// Globals are the global options exactly as given (kept for every runc
	// call this invocation turns into).
	Globals   []string
	Root      string
	Log       string
	LogFormat string
	Command   string
	// Args are the command's arguments exactly as given.
	Args []string
	// Parsed options of create (and the ID of any command with one).
	Bundle        string
	PidFile       string
	ConsoleSocket string
	PidfdSocket   string
	NoPivot       bool
	NoNewKeyring  bool
	PreserveFDs   string
	ID            string
}

// Global options of runc that take a value; the rest are booleans (or
// take theirs as --name=value).
var globalValueOpts = map[string]bool{"root": true, "log": true, "log-format": true, "criu": true}

// Options of create that take a value.
var createValueOpts = map[string]bool{"bundle": true, "b": true, "pid-file": true, "console-socket": true,
	"pidfd-socket": true, "preserve-fds": true}

// Parse reads runc's command line (without the program name).
func Parse(args []string) (Invocation, error) {
	var inv Invocation
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			break
		}
		name, val, hasVal := cutOpt(a)
		inv.Globals = append(inv.Globals, a)
		if globalValueOpts[name] && !hasVal {
			if i+1 >= len(args) {
				return inv, fmt.Errorf("option %s needs a value", a)
			}
			i++
			val = args[i]
			inv.Globals = append(inv.Globals, val)
		}
		switch name {
		case "root":
			inv.Root = val
		case "log":
			inv.Log = val
		case "log-format":
			inv.LogFormat = val
		}
	}
	if i >= len(args) {
		return inv, nil // e.g. `runc --version`
	}
	inv.Command, inv.Args = args[i], args[i+1:]
	var positional []string
	for j := 0; j < len(inv.Args); j++ {
		a := inv.Args[j]
		if a == "--" {
			positional = append(positional, inv.Args[j+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			positional = append(positional, a)
			continue
		}
		name, val, hasVal := cutOpt(a)
		if inv.Command == "create" && createValueOpts[name] && !hasVal {
			if j+1 >= len(inv.Args) {
				return inv, fmt.Errorf("option %s needs a value", a)
			}
			j++
			val = inv.Args[j]
		}
		if inv.Command != "create" {
			continue
		}
		switch name {
		case "bundle", "b":
			inv.Bundle = val
		case "pid-file":
			inv.PidFile = val
		case "console-socket":
			inv.ConsoleSocket = val
		case "pidfd-socket":
			inv.PidfdSocket = val
		case "preserve-fds":
			inv.PreserveFDs = val
		case "no-pivot":
			inv.NoPivot = true
		case "no-new-keyring":
			inv.NoNewKeyring = true
		}
	}
	if len(positional) > 0 {
		inv.ID = positional[len(positional)-1]
	}
	return inv, nil
}

func cutOpt(a string) (name, val string, hasVal bool) {
	name = strings.TrimLeft(a, "-")
	name, val, hasVal = strings.Cut(name, "=")
	return name, val, hasVal
}
