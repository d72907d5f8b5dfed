// `qm state check|export|import`: the offline tools for the durable state
// (an SQLite state directory or a PostgreSQL database; see qm/store.h and
// docs/cli-state.md). Private to src/cli.
#ifndef QM_CLI_STATE_CMD_H_
#define QM_CLI_STATE_CMD_H_

#include <iosfwd>
#include <string>

#include "cli/output.h"

namespace CLI {
class App;
}  // namespace CLI

namespace qm::cli {

// The SQLite state directory used when no --state is given:
// $XDG_STATE_HOME/qm when XDG_STATE_HOME is set and non-empty, else
// ./var/qm (relative to the working directory).
std::string DefaultStateDir();

// The `qm state` command: its subcommands, registered on the command line,
// and the values they parse into. Holds pointers into itself (CLI11 writes
// the options' values here), so it neither copies nor moves.
class StateCommand {
 public:
  // Adds `state` with `check`, `export` and `import` to `app`, which must
  // outlive this object.
  explicit StateCommand(CLI::App* app);
  StateCommand(const StateCommand&) = delete;
  StateCommand& operator=(const StateCommand&) = delete;

  // Whether the parsed command line chose one of the subcommands.
  bool chosen() const;

  // Runs the chosen subcommand: prints its envelope with `o` (or, for
  // `export` without --file, the export's JSON lines to o.out), reading an
  // import from `in` when its FILE is "-". Diagnostics that cannot go into
  // an envelope go to `err`. Returns the exit code (0, or 1 on error).
  int Run(const Output& o, std::istream& in, std::ostream& err) const;

 private:
  CLI::App* check_ = nullptr;
  CLI::App* export_ = nullptr;
  CLI::App* import_ = nullptr;
  std::string state_dir_;    // --state; "" when not given
  std::string store_uri_;    // --store; "" when not given
  std::string export_file_;  // export --file; "" for stdout
  std::string import_file_;  // import FILE; "-" for stdin
};

}  // namespace qm::cli

#endif  // QM_CLI_STATE_CMD_H_
