// The MCP tools of qm: seed 002's resource_* tools over the qm server's
// API. Each tool has an input schema (JSON Schema; the arguments are
// checked against it before anything is sent) and an output schema (what
// its structuredContent holds, on success or as {"error": {...}}).
//
// Every figure a tool answers comes from the server's answers: nothing is
// estimated or made up here. A tool that cannot do what it is asked (say,
// resource_optimize with apply: true, which the server has no operation
// for) answers a tool error saying why.
//
// Thread safety: the tool table is immutable; tools may run concurrently
// (the Backend must allow it).
#ifndef QM_MCP_TOOLS_H_
#define QM_MCP_TOOLS_H_

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "mcp/backend.h"

namespace qm::mcp {

// A tool's answer: the MCP CallToolResult without the JSON-RPC around it.
struct ToolResult {
  // structuredContent: the result (always an object), or {"error":
  // {"code", "message", ...}} when is_error.
  nlohmann::json structured = nlohmann::json::object();
  // The text content blocks: a summary for people and models (and, for
  // results that are data, the structured content as JSON text, for clients
  // that do not read structuredContent).
  std::vector<std::string> text;
  bool is_error = false;

  // {"content": [{"type": "text", "text": ...}...], "structuredContent":
  // ..., "isError": ...}.
  nlohmann::json ToJson() const;
};

struct Tool {
  std::string name, title, description;
  nlohmann::json input_schema, output_schema;
  // MCP tool annotations (readOnlyHint, destructiveHint, idempotentHint,
  // openWorldHint).
  nlohmann::json annotations;
  // Runs the tool on arguments that passed input_schema.
  std::function<ToolResult(Backend& backend, const nlohmann::json& args)> run;

  // The tools/list entry.
  nlohmann::json ToJson() const;
};

// The tools, in the order tools/list gives them.
const std::vector<Tool>& Tools();
// The tool named `name`, or null.
const Tool* FindTool(std::string_view name);

// Checks `args` (null = no arguments = {}) against the tool's input schema
// and runs it; invalid arguments are a tool error (INVALID_REQUEST naming
// the field), as is any failure of the operation.
ToolResult CallTool(const Tool& tool, Backend& backend,
                    const nlohmann::json& args);

// A tool error result for `error` ({"code", "message", ...}).
ToolResult ErrorResult(nlohmann::json error);

// The compact text view of resource_monitor's dashboard format, rendered
// from a /v1/status result and a list of allocations (/v1/allocations'
// `allocations`). Only the figures in them are shown.
std::string RenderDashboard(const nlohmann::json& status,
                            const nlohmann::json& allocations, bool more);

// Keeps the samples of a Prometheus exposition whose `product` and
// `agent_type` labels (when they have them) equal the given ones ("" = any),
// and the HELP/TYPE lines of the families that keep samples.
std::string FilterMetrics(std::string_view text, const std::string& product,
                          const std::string& agent_type);

}  // namespace qm::mcp

#endif  // QM_MCP_TOOLS_H_
