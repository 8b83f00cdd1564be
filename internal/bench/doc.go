// Package bench measures migrations across a matrix of modes, message
// rates and consumer state sizes in the lab, each run with internal/demo,
// and writes one CSV row per run, a Markdown report and plots.
//
// The matrix is data (matrix.yaml, or a file given to `ms2m bench
// --config`): a mode is a workload kind plus StatefulMigration spec fields,
// so a new technique joins by configuration. Every mode is compared, cell
// by cell and within the same bench run, with the stop-and-copy baseline
// and with the MS2M configuration.
//
// A results directory holds results.csv (one row per run, written after
// each run), bench.json (command, configuration, machine), runs.log, and
// the report with its plots. Running the bench again on the same directory
// skips every run whose row is there: a long matrix is resumed, not
// restarted; `ms2m bench report --in DIR` redraws the report alone.
package bench
