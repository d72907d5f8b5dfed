// The `qm` command line. Every command that reports prints the JSON envelope
// of seed 000 (or a table with --output table) and exits non-zero on error.
#ifndef QM_CLI_CLI_H_
#define QM_CLI_CLI_H_

#include <iosfwd>

namespace qm::cli {

// Runs the command line; returns the process exit code. Writes results to
// `out` and diagnostics (logs) to `err`; reads the process's stdin only for
// `qm state import -`.
int Run(int argc, const char* const* argv, std::ostream& out,
        std::ostream& err);

// Run() on the process's stdout and stderr.
int Main(int argc, char** argv);

}  // namespace qm::cli

#endif  // QM_CLI_CLI_H_
