#include "cli/mcp_cmd.h"

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <ostream>

#include "cli/client_cmd.h"
#include "mcp/backend.h"
#include "mcp/mcp_server.h"
#include "mcp/stdio.h"
#include "server/holders.h"
#include "server/http_client.h"

namespace qm::cli {

void AddMcpOptions(CLI::App* cmd, McpCommandOptions* options) {
  cmd->add_option("--server", options->server,
                  "The qm server (default: $QM_SERVER, else " +
                      std::string(kDefaultServer) + ")")
      ->type_name("URL");
}

int RunMcp(const McpCommandOptions& options, int in_fd, std::ostream& out,
           std::ostream& err) {
  server::ClientOptions client;
  client.url = options.server;
  if (client.url.empty()) {
    const char* env = std::getenv("QM_SERVER");
    client.url = env != nullptr && *env != '\0' ? env : kDefaultServer;
  }
  if (const char* token = std::getenv("QM_TOKEN")) client.token = token;
  if (const char* ca = std::getenv("QM_CA_FILE")) client.ca_file = ca;

  // One line at a time from any thread; `err` is the process's stderr,
  // which outlives every thread.
  auto log_mu = std::make_shared<std::mutex>();
  std::function<void(const std::string&)> log =
      [&err, log_mu](const std::string& line) {
        std::lock_guard<std::mutex> lock(*log_mu);
        err << "qm mcp: " << line << std::endl;
      };
  log("serving MCP on stdio for the qm server at " + client.url);
  std::shared_ptr<mcp::Backend> backend =
      mcp::NewHttpBackend(std::move(client));
  // This process lives as long as its client's session: naming it as the
  // holder of what it allocates lets a server on this host take those
  // allocations back the moment the client (and so this process) goes.
  if (auto self = server::SelfHolderJson(); self.ok()) {
    backend = mcp::WithHolder(std::move(backend), nlohmann::json::parse(*self));
  } else {
    log("allocations will not name this process as their holder (" +
        self.status().ToString() + "); their leases still cover them");
  }
  mcp::McpServerOptions server_options;
  server_options.log = log;
  auto server = std::make_shared<mcp::McpServer>(std::move(backend),
                                                 std::move(server_options));
  return mcp::ServeStdio(std::move(server), in_fd, out, log);
}

McpCommand::McpCommand(CLI::App* app) {
  cmd_ = app->add_subcommand(
      "mcp",
      "Serve the Model Context Protocol on stdin/stdout: qm's tools "
      "(resource_allocate, resource_release, resource_monitor, ...) and "
      "resources for MCP clients, against the qm server (`claude mcp add qm "
      "-- qm mcp`; see docs/integrations/mcp.md)");
  AddMcpOptions(cmd_, &options_);
}

bool McpCommand::chosen() const { return static_cast<bool>(*cmd_); }

int McpCommand::Run(std::ostream& out, std::ostream& err) const {
  return RunMcp(options_, 0, out, err);
}

}  // namespace qm::cli
