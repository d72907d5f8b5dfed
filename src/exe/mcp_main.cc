// `qm-mcp`: the same MCP stdio server as `qm mcp`, as an executable of its
// own (for MCP clients configured with it, and for the tests).
#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/mcp_cmd.h"

int main(int argc, char** argv) {
  CLI::App app{
      "qm-mcp: qm's Model Context Protocol server on stdin/stdout (the same "
      "as `qm mcp`; see docs/integrations/mcp.md)",
      "qm-mcp"};
  qm::cli::McpCommandOptions options;
  qm::cli::AddMcpOptions(&app, &options);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help goes to stdout as usual; errors to stderr, exit code 2.
    const int code = app.exit(e, std::cout, std::cerr);
    return code == 0 ? 0 : 2;
  }
  return qm::cli::RunMcp(options, 0, std::cout, std::cerr);
}
