// `qm mcp`: qm's Model Context Protocol server over stdio, for MCP clients
// (Claude Code: `claude mcp add qm -- qm mcp`) that start it as a process.
// It speaks MCP on stdin/stdout (nothing else is written to stdout; logs go
// to stderr) and serves the tools and resources of src/mcp against the qm
// server named by --server or $QM_SERVER (default http://127.0.0.1:7070),
// with $QM_TOKEN as its bearer token and $QM_CA_FILE for https://. It ends
// with exit code 0 at end of input. See docs/integrations/mcp.md.
//
// Private to src/cli (and src/exe/mcp_main.cc, the standalone `qm-mcp`).
#ifndef QM_CLI_MCP_CMD_H_
#define QM_CLI_MCP_CMD_H_

#include <iosfwd>
#include <string>

namespace CLI {
class App;
}  // namespace CLI

namespace qm::cli {

struct McpCommandOptions {
  std::string server;  // --server; "" = $QM_SERVER or the default
};

// Adds `mcp`'s options to `cmd` (the `mcp` subcommand, or the app of the
// standalone binary); they are written to `*options` (which must outlive
// the parse).
void AddMcpOptions(CLI::App* cmd, McpCommandOptions* options);

// Serves MCP on `in_fd` (stdin) and `out` (stdout; it must stay valid until
// the process ends), logging to `err`. Returns the exit code: 0 at end of
// input.
int RunMcp(const McpCommandOptions& options, int in_fd, std::ostream& out,
           std::ostream& err);

// The `mcp` subcommand, in the shape of the other commands of cli.cc:
//   McpCommand mcp(&app);                        // before app.parse
//   if (mcp.chosen()) return mcp.Run(out, err);  // after it
class McpCommand {
 public:
  explicit McpCommand(CLI::App* app);
  McpCommand(const McpCommand&) = delete;
  McpCommand& operator=(const McpCommand&) = delete;

  // Whether the parsed command line chose `qm mcp`.
  bool chosen() const;
  // Serves stdin (fd 0) and `out` until end of input; the exit code.
  int Run(std::ostream& out, std::ostream& err) const;

 private:
  CLI::App* cmd_;
  McpCommandOptions options_;
};

}  // namespace qm::cli

#endif  // QM_CLI_MCP_CMD_H_
