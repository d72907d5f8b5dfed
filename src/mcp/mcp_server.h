// The Model Context Protocol server of qm: one MCP session, independent of
// the transport. A transport (stdio: `qm mcp`; Streamable HTTP: /mcp on
// `qm serve`) hands it each message it receives as text and sends what it
// returns, so both speak exactly the same protocol.
//
// Protocol: JSON-RPC 2.0 as MCP revisions 2025-06-18 (the latest we speak)
// and 2025-03-26 have it, negotiated at `initialize` (a client asking for
// one of them gets it; any other version gets 2025-06-18, and the client
// decides whether to go on). Requests other than `initialize` and `ping`
// before `initialize` are refused (-32600, "not initialized"). JSON-RPC
// errors: -32700 text that is not JSON, -32600 a message that is not a
// valid request (no "jsonrpc": "2.0", a method that is not a string, an id
// that is neither a string nor an integer, a batch array under 2025-06-18,
// a message over the size limit), -32601 an unknown method, -32602 bad
// params (including an unknown tool or resource URI: -32002 for those
// URIs), -32603 an internal error. Errors about a message whose id cannot
// be read carry id null. Ids are echoed exactly as given. Under 2025-03-26
// a batch array is answered with an array of the responses (none for a
// batch of notifications).
//
// Methods: initialize, ping, tools/list, tools/call, resources/list,
// resources/read, resources/subscribe, resources/unsubscribe; the
// notifications notifications/initialized and notifications/cancelled
// (a cancelled tools/call is not answered; an allocation it obtained is
// cancelled on the server, since the client will never learn its id).
// Other notifications and any responses are ignored.
//
// Tools (mcp/tools.h) answer tool results: structuredContent plus text
// content, and isError with {"error": {"code", "message"}} for every
// failure of the operation itself (the JSON envelope's codes), so agents
// can read and correct them; JSON-RPC errors are kept for protocol
// problems. Resources: qm://status, qm://costs/today, qm://config
// (application/json, read from the server on every read).
//
// Thread safety: Handle and PollSubscriptions may be called concurrently
// (a transport may run a long tools/call, e.g. a waiting allocate, while it
// keeps answering other messages).
#ifndef QM_MCP_MCP_SERVER_H_
#define QM_MCP_MCP_SERVER_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "mcp/backend.h"

namespace qm::mcp {

// The protocol revisions spoken, newest first.
inline constexpr const char* kProtocolVersions[] = {"2025-06-18", "2025-03-26"};

// JSON-RPC 2.0 and MCP error codes.
inline constexpr int kParseError = -32700;
inline constexpr int kInvalidRequest = -32600;
inline constexpr int kMethodNotFound = -32601;
inline constexpr int kInvalidParams = -32602;
inline constexpr int kInternalError = -32603;
inline constexpr int kResourceNotFound = -32002;

struct McpServerOptions {
  // serverInfo.version.
  std::string version = "0.1.0";
  // Messages longer than this (bytes) are refused with -32600 unread.
  // Default 4 MiB.
  size_t max_message_bytes = size_t{4} << 20;
  // JSON nested deeper than this (arrays and objects) is refused with
  // -32600 before it is parsed. Default 64, as the HTTP API.
  int max_depth = 64;
  // Where to log what the client is not told (a cancelled allocation that
  // could not be cancelled, say); null = nowhere. Called from any thread.
  std::function<void(const std::string&)> log;
};

// A JSON-RPC error response, as text: {"jsonrpc": "2.0", "id": id,
// "error": {"code": code, "message": message}}. For transports that refuse
// a message before it reaches McpServer (too large to read, say).
std::string JsonRpcError(const nlohmann::json& id, int code,
                         std::string_view message);

// What a transport needs to know of a message before it hands it to
// McpServer: whether it holds a request (something to answer: an object
// with a method and an id, or, in a batch array, at least one), and
// whether that is `initialize`. Text that McpServer would refuse unread
// (over the size or depth limits, not JSON) holds neither.
struct MessageInfo {
  bool has_request = false;
  bool initialize = false;
};
MessageInfo InspectMessage(std::string_view message,
                           const McpServerOptions& options);

class McpServer {
 public:
  // `backend` is the qm server the tools and resources read and change.
  explicit McpServer(std::shared_ptr<Backend> backend,
                     McpServerOptions options = {});
  ~McpServer();
  McpServer(const McpServer&) = delete;
  McpServer& operator=(const McpServer&) = delete;

  // Handles one message (one JSON-RPC request, notification, response or,
  // under 2025-03-26, batch) and returns the messages to send back, each a
  // complete JSON text without a trailing newline: one response for a
  // request, none for a notification or a response. May take as long as
  // the tool it calls (resource_allocate waits up to its timeout).
  std::vector<std::string> Handle(std::string_view message);

  // Whether Handle(message) may take long (a tools/call request: a waiting
  // allocate takes up to its timeout), so a transport should not hold its
  // other messages behind it. Cheap next to Handle; false for anything
  // Handle refuses at once.
  bool MayBlock(std::string_view message) const;

  // The notifications/resources/updated messages due: each subscribed
  // resource is read again and compared with its last reading (ignoring
  // fields that only say when it was read); one notification per resource
  // that changed. Nothing without subscriptions. A transport calls it
  // periodically (stdio: every second) while has_subscriptions().
  std::vector<std::string> PollSubscriptions();
  bool has_subscriptions() const;

  // Whether `initialize` has been answered, and the version it agreed
  // ("" before).
  bool initialized() const;
  std::string protocol_version() const;

  const McpServerOptions& options() const;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace qm::mcp

#endif  // QM_MCP_MCP_SERVER_H_
