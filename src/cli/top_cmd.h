// `qm top`: a terminal view of a running qm server, like top(1): health,
// agents active against their limits per type and product, the queue with
// scores and reasons, the active allocations with their expiry, and
// today's tokens and cost against the limits. It redraws on every snapshot
// of the server's monitor stream (GET /v1/monitor), fetching the queue,
// allocations and costs with it. ANSI escapes only (no curses), so it works
// over SSH; `q` or Ctrl-C quits and restores the terminal. `--once` prints
// one frame (no escapes unless --color=always) and exits, for scripts and
// tests. The server is --server or $QM_SERVER, the token $QM_TOKEN, the CA
// file $QM_CA_FILE, as for the other client commands. Private to src/cli.
#ifndef QM_CLI_TOP_CMD_H_
#define QM_CLI_TOP_CMD_H_

#include <iosfwd>
#include <string>

#include "api/json_codec.h"

namespace CLI {
class App;
}  // namespace CLI

namespace qm::cli {

// What one frame shows: the `result` of each API answer (null when that
// read failed).
struct TopData {
  api::Json status;       // GET /v1/status
  api::Json queue;        // GET /v1/queue
  api::Json allocations;  // GET /v1/allocations?status=active
  api::Json costs;        // GET /v1/costs
  std::string server;     // the URL, for the title
  std::string error;      // why the last refresh failed ("" when it did not)
};

// Renders one frame `width` columns wide; at most `height` lines when
// height > 0 (tables are cut to fit, saying how many rows were left out).
// `color`: ANSI colours and bold.
std::string RenderTopFrame(const TopData& data, int width, int height,
                           bool color);

// The `top` subcommand, in the shape of the other commands of cli.cc:
//   TopCommand top(&app);                        // before app.parse
//   if (top.chosen()) return top.Run(out, err);  // after it
class TopCommand {
 public:
  explicit TopCommand(CLI::App* app);
  TopCommand(const TopCommand&) = delete;
  TopCommand& operator=(const TopCommand&) = delete;

  bool chosen() const;
  // Runs until `q` / Ctrl-C (or one frame with --once); the exit code (1
  // when the server cannot be read with --once).
  int Run(std::ostream& out, std::ostream& err) const;

 private:
  CLI::App* cmd_;
  std::string server_;
  std::string color_ = "auto";
  bool once_ = false;
  int interval_ = 2;
};

}  // namespace qm::cli

#endif  // QM_CLI_TOP_CMD_H_
