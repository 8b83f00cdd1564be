// Package cli is the kubectl-migrate plugin: create, watch and cancel
// StatefulMigrations from the command line.
package cli

import "github.com/ms2m/ms2m/internal/podstream"

// Pod annotations that describe a workload's message stream (see
// podstream).
const (
	AnnotationBrokerURL   = podstream.AnnotationBrokerURL
	AnnotationQueue       = podstream.AnnotationQueue
	AnnotationExchange    = podstream.AnnotationExchange
	AnnotationRoutingKey  = podstream.AnnotationRoutingKey
	AnnotationCredentials = podstream.AnnotationCredentials
	AnnotationMgmtURL     = podstream.AnnotationMgmtURL
)

// StreamFlags are the broker flags of `migrate pod`; empty ones fall back
// to the pod's annotations.
type StreamFlags = podstream.Flags
