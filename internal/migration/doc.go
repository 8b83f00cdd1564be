// Package migration holds the migration's decisions as pure functions over
// status, observations and an explicit "now": which strategy, which target
// node, whether a phase overran, when to cut over, whether an abort can
// still roll back. No API calls, no broker, no clock of its own, so every
// rule is table-tested without a cluster.
package migration
