// The stdio transport of MCP (`qm mcp`): newline-delimited JSON-RPC
// messages, read from a file descriptor (stdin) and written to a stream
// (stdout), which carries nothing else. Logs go to their own stream
// (stderr).
//
// Each line is one message, handed to McpServer. tools/call requests run
// on threads of their own (a waiting resource_allocate must not hold up a
// ping or a release), so their responses may come out of order; every
// other message is answered in order before the next line is read. A line
// longer than the message size limit is skipped unread and answered with
// -32600, and serving goes on. While resources are subscribed, they are
// polled every second and notifications/resources/updated written.
//
// At end of input the tool calls still running get `exit_grace` to finish
// (their answers are still written); then ServeStdio returns 0, or, if some
// are still running (a long waiting allocate), ends the process at once
// with exit code 0 (std::_Exit after flushing), since their threads cannot
// be interrupted.
#ifndef QM_MCP_STDIO_H_
#define QM_MCP_STDIO_H_

#include <functional>
#include <iosfwd>
#include <memory>
#include <string>

#include "mcp/mcp_server.h"
#include "qm/clock.h"

namespace qm::mcp {

struct StdioOptions {
  // How often subscribed resources are read. Default 1 s.
  Duration poll_interval = std::chrono::seconds(1);
  // See the file comment. Default 5 s.
  Duration exit_grace = std::chrono::seconds(5);
  // Tool calls running at once; reading waits while this many run.
  // Default 32.
  int max_in_flight = 32;
};

// Serves `server` over stdio until end of input on `in_fd`: see the file
// comment. `out` must stay valid until the process ends (std::cout).
// `log` (may be null) takes one line at a time, from this thread only.
// Ignores SIGPIPE (a client gone shows as a failed write, then ends the
// serving). Returns 0.
int ServeStdio(std::shared_ptr<McpServer> server, int in_fd, std::ostream& out,
               const std::function<void(const std::string&)>& log,
               StdioOptions options = {});

}  // namespace qm::mcp

#endif  // QM_MCP_STDIO_H_
