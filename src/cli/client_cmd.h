// The `qm` commands that talk to a running server (`qm allocate '{...}'`,
// `qm release`, `qm status`, `qm events`...) and `qm serve` itself. Each
// client command is seed 000's operation as it writes it:
// `qm <operation> [resource-type | id] ['<json params>']`, sent to the
// server named by --server or $QM_SERVER (default http://127.0.0.1:7070);
// the server's envelope is printed, and the exit code is 0 only when it
// says success. Private to src/cli.
#ifndef QM_CLI_CLIENT_CMD_H_
#define QM_CLI_CLIENT_CMD_H_

#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "cli/output.h"

namespace CLI {
class App;
}  // namespace CLI

namespace qm::cli {

// The server URL used when neither --server nor $QM_SERVER is given.
inline constexpr const char* kDefaultServer = "http://127.0.0.1:7070";

class ClientCommands {
 public:
  // Adds the client commands and `serve` to `app` (which must outlive
  // this object).
  explicit ClientCommands(CLI::App* app);
  ~ClientCommands();
  ClientCommands(const ClientCommands&) = delete;
  ClientCommands& operator=(const ClientCommands&) = delete;

  // Whether the parsed command line chose one of them.
  bool chosen() const;
  // Runs it; returns the exit code.
  int Run(const Output& o, std::ostream& err) const;

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace qm::cli

#endif  // QM_CLI_CLIENT_CMD_H_
