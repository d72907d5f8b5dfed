// `qm run [allocation options] -- COMMAND ARGS...`: runs COMMAND under an
// allocation of the qm server, like `flock` or `sem` but with priorities,
// budgets and one view across the fleet. Private to src/cli.
//
// It allocates (waiting in the queue as long as it takes, printing its
// position to stderr), runs the command with QM_ALLOCATION_ID,
// QM_FENCING_TOKEN, QM_MODEL, QM_MAX_TOKENS and QM_SERVER in its
// environment, renews the lease every third of its TTL while the command
// runs, forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to
// it, and releases the allocation when it exits (outcome success for exit
// status 0, else failure). Exit code: the command's (128 + N when a
// signal N ended it); 125 when qm itself failed (no server, refused
// request: the error envelope goes to stderr), 127 when COMMAND cannot be
// run.
//
// If `qm run` dies without releasing (SIGKILL), its lease lapses: the server
// releases the allocation `ttl` plus `auto_release.grace_period` after the
// last renewal.
#ifndef QM_CLI_RUN_CMD_H_
#define QM_CLI_RUN_CMD_H_

#include <iosfwd>
#include <string>
#include <vector>

#include "qm/clock.h"
#include "server/http_client.h"

namespace qm::cli {

inline constexpr int kRunExitQmFailed = 125;
inline constexpr int kRunExitCannotRun = 127;

struct RunOptions {
  // The server: URL, token, TLS trust.
  server::ClientOptions client;
  // The allocation request (JSON object text; "" = {}), before the flags
  // below are merged into it.
  std::string request_json;
  std::string workflow_id, agent_type, product, priority, requester, model;
  std::vector<std::string> exclusive, shared;
  double estimated_minutes = 0;  // 0 = not given
  int64_t estimated_tokens = 0;  // 0 = not given
  // Lease length; renewed every third of it. Default 60 s.
  Duration ttl = std::chrono::seconds(60);
  // Give up waiting in the queue after this long (0 = wait as long as it
  // takes): the queued request is cancelled and qm run exits 125.
  Duration max_wait{0};
  std::vector<std::string> command;
};

// Runs it; returns the exit code described above.
int RunUnderAllocation(const RunOptions& options, std::ostream& err);

}  // namespace qm::cli

#endif  // QM_CLI_RUN_CMD_H_
