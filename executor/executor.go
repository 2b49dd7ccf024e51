// Package executor owns the engine-neutral interface through which workers run
// code: preparing a locked-down container for a run, feeding it the code,
// streaming its output and reporting how it ended. Implementations live in
// sub-packages named for the engine they drive (executor/docker).
package executor
