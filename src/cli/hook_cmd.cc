#include "cli/hook_cmd.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "server/http_client.h"

namespace qm::cli {
namespace {

using Json = nlohmann::ordered_json;
namespace fs = std::filesystem;

bool IsSubagentTool(const std::string& name) {
  return name == "Task" || name == "Agent";
}

// A name safe as one path component (session and tool-use ids are
// generated, but they come from stdin).
std::string Safe(const std::string& s) {
  std::string out;
  for (char c : s) {
    out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')
               ? c
               : '_';
  }
  return out.empty() ? "_" : out.substr(0, 128);
}

std::string DefaultStateDir() {
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (xdg != nullptr && *xdg != '\0') return std::string(xdg) + "/qm-hook";
  return "/tmp/qm-hook-" + std::to_string(getuid());
}

void PreToolAnswer(std::ostream& out, const std::string& decision,
                   const std::string& reason,
                   const std::string& system_message = "") {
  Json j;
  j["hookSpecificOutput"] = {{"hookEventName", "PreToolUse"},
                             {"permissionDecision", decision},
                             {"permissionDecisionReason", reason}};
  if (!system_message.empty()) j["systemMessage"] = system_message;
  out << j.dump() << std::endl;
}

StatusOr<Json> Call(server::HttpClient& c, const std::string& method,
                    const std::string& target, const Json& body,
                    Duration timeout) {
  auto r = c.Call(method, target, body.is_null() ? "" : body.dump(), timeout);
  if (!r.ok()) return r.status();
  Json j = Json::parse(r->body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("status")) {
    return Internal("the qm server answered HTTP " + std::to_string(r->status) +
                    " without an envelope");
  }
  return j;
}

std::string ErrorText(const Json& envelope) {
  return envelope["error"].value("code", "ERROR") + ": " +
         envelope["error"].value("message", "");
}

// Releases the allocation recorded in `file` (and removes the file).
void ReleaseRecorded(server::HttpClient& c, const fs::path& file,
                     const Json& usage, std::ostream& err) {
  std::ifstream in(file);
  std::string id;
  std::getline(in, id);
  in.close();
  std::error_code ec;
  fs::remove(file, ec);
  if (id.empty()) return;
  auto r = Call(c, "POST", "/v1/allocations/" + id + "/release",
                Json{{"usage", usage}}, std::chrono::seconds(10));
  if (!r.ok()) {
    err << "qm hook: releasing " << id << ": " << r.status().message() << "\n";
  } else if ((*r)["status"] != "success") {
    err << "qm hook: releasing " << id << ": " << ErrorText(*r) << "\n";
  }
}

}  // namespace

int RunHook(const HookOptions& o, std::istream& in, std::ostream& out,
            std::ostream& err) {
  const std::string text((std::istreambuf_iterator<char>(in)),
                         std::istreambuf_iterator<char>());
  const Json event = Json::parse(text, nullptr, false);
  if (event.is_discarded() || !event.is_object()) {
    err << "qm hook: stdin is not a hook event (a JSON object)\n";
    return 2;
  }
  const std::string name = event.value("hook_event_name", "");
  const std::string tool = event.value("tool_name", "");
  const std::string session = Safe(event.value("session_id", "none"));
  const std::string tool_use = Safe(event.value("tool_use_id", ""));
  const fs::path dir =
      fs::path(o.state_dir.empty() ? DefaultStateDir() : o.state_dir) / session;

  server::HttpClient client(o.client);

  if (name == "PreToolUse" && IsSubagentTool(tool)) {
    const Json& input =
        event.contains("tool_input") && event["tool_input"].is_object()
            ? event["tool_input"]
            : Json::object();
    Json req = {{"workflow_id", "claude-" + session},
                {"requester", "claude-code"},
                {"agent_type", input.value("subagent_type", "general-purpose")},
                {"wait", o.wait.count() / 1000.0}};
    if (!o.product.empty()) req["product"] = o.product;
    if (input.contains("description") && input["description"].is_string()) {
      req["metadata"] = {{"description", input["description"]}};
    }
    auto r = Call(client, "POST", "/v1/allocations", req,
                  o.wait + std::chrono::seconds(15));
    if (!r.ok()) {
      const std::string msg =
          "qm hook: no allocation (" + r.status().message() + ")";
      if (o.on_error == "deny") {
        PreToolAnswer(out, "deny", msg);
      } else {
        PreToolAnswer(out, "allow", msg + "; allowed (on_error allow)", msg);
      }
      return 0;
    }
    if ((*r)["status"] != "success") {
      PreToolAnswer(out, "deny", "qm refused the subagent: " + ErrorText(*r));
      return 0;
    }
    const Json& a = (*r)["result"];
    const std::string id = a.value("allocation_id", "");
    if (a.value("status", "") != "active") {
      // Still queued after the wait: give the slot up, say why and when.
      (void)Call(client, "POST", "/v1/allocations/" + id + "/cancel", nullptr,
                 std::chrono::seconds(10));
      std::string reason = "qm: no slot for this subagent yet";
      if (a.contains("reason_queued")) {
        reason += " (" + a["reason_queued"].get<std::string>() + ")";
      }
      if (a.contains("expected_start") && a["expected_start"].is_string()) {
        reason += "; expected start " + a["expected_start"].get<std::string>();
      }
      reason += ". Try again later or do this work without a subagent.";
      PreToolAnswer(out, "deny", reason);
      return 0;
    }
    std::error_code ec;
    fs::create_directories(dir, ec);
    std::ofstream(dir / (tool_use.empty() ? id : tool_use)) << id << "\n";
    PreToolAnswer(out, "allow",
                  "qm granted " + id + " (fencing token " +
                      std::to_string(a.value("fencing_token", uint64_t{0})) +
                      ")");
    return 0;
  }

  if (name == "PostToolUse" && IsSubagentTool(tool)) {
    Json usage = {{"outcome", "success"}};
    if (event.contains("tool_response") && event["tool_response"].is_object()) {
      const Json& resp = event["tool_response"];
      if (resp.contains("totalTokens") &&
          resp["totalTokens"].is_number_unsigned()) {
        usage["tokens"] = resp["totalTokens"];
      }
    }
    const fs::path file = dir / tool_use;
    if (!tool_use.empty() && fs::exists(file)) {
      ReleaseRecorded(client, file, usage, err);
    }
    return 0;
  }

  if (name == "SubagentStop") {
    // Several subagents may run at once: release only the one the event
    // names (PostToolUse of its tool call releases it otherwise).
    const std::string which =
        Safe(event.value("tool_use_id", event.value("agent_id", "")));
    const fs::path file = dir / which;
    std::error_code ec;
    if (which != "_" && fs::exists(file, ec)) {
      ReleaseRecorded(client, file, Json{{"outcome", "success"}}, err);
    }
    return 0;
  }

  if (name == "Stop") {
    // The session's turn ended: nothing it started runs any more.
    std::error_code ec;
    if (fs::is_directory(dir, ec)) {
      for (const auto& entry : fs::directory_iterator(dir, ec)) {
        ReleaseRecorded(client, entry.path(), Json{{"outcome", "success"}},
                        err);
      }
      fs::remove(dir, ec);
    }
    return 0;
  }
  return 0;
}

}  // namespace qm::cli
