// `qm hook`: the agent-runtime gate for Claude Code. Claude Code runs it as
// a command hook with the hook event as JSON on stdin; it answers in the
// hook protocol on stdout. Private to src/cli. See
// docs/integrations/claude-code.md.
//
//   PreToolUse of the subagent tool (Task / Agent): allocate for the
//     subagent (agent_type = its subagent_type, workflow_id = the session),
//     waiting up to `wait`; granted: allow; still queued (or refused): deny
//     with the reason and the expected start (a queued request is
//     cancelled, so it holds nothing).
//   PostToolUse of that tool: release the subagent's allocation, with the
//     tokens the tool response reports when it reports any.
//   SubagentStop naming its tool call (tool_use_id or agent_id): release
//     that subagent's allocation.
//   Stop: release what the session still holds (its turn ended; nothing it
//     started runs any more).
//   Any other event or tool: no opinion (exit 0, no output).
//
// Which allocation belongs to which tool call is kept in small files under
// `state_dir` (one per tool_use_id), so concurrent hook processes of one
// session never share mutable state.
//
// When the qm server cannot be reached: `on_error` "allow" (default: a
// stopped qm must not stop the user's work; a warning is shown) or "deny".
#ifndef QM_CLI_HOOK_CMD_H_
#define QM_CLI_HOOK_CMD_H_

#include <iosfwd>
#include <string>

#include "qm/clock.h"
#include "server/http_client.h"

namespace qm::cli {

struct HookOptions {
  // The server: URL, token, TLS trust.
  server::ClientOptions client;
  std::string product;  // "" = the server's default product
  // How long a subagent may wait in the queue before it is denied. Default
  // 30 s (Claude Code gives a hook 60 s by default).
  Duration wait = std::chrono::seconds(30);
  std::string on_error = "allow";  // allow | deny
  // Where tool-call -> allocation files live. Default:
  // $XDG_RUNTIME_DIR/qm-hook, else /tmp/qm-hook-<uid>.
  std::string state_dir;
};

// Reads one hook event from `in`, acts, answers on `out`; diagnostics on
// `err`. Returns the exit code (0; 2 only for a malformed event, which
// Claude Code shows to the user).
int RunHook(const HookOptions& options, std::istream& in, std::ostream& out,
            std::ostream& err);

}  // namespace qm::cli

#endif  // QM_CLI_HOOK_CMD_H_
