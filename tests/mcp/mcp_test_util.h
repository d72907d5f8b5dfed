// What the MCP tests share: a real `qm serve` App in this process (port 0,
// state in a temporary directory) and an McpServer talking to it over
// HTTP, with helpers to send JSON-RPC messages and call tools.
#ifndef QM_TESTS_MCP_MCP_TEST_UTIL_H_
#define QM_TESTS_MCP_MCP_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mcp/backend.h"
#include "mcp/mcp_server.h"
#include "tests/server/test_util.h"

namespace qm::mcp::testing {

using Json = nlohmann::json;

// At most 2 agents at once, so a third request queues.
inline constexpr const char* kTwoAgents = R"(
max_concurrent:
  total: 2
  per_type:
    coder: 2
)";

class McpTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(kTwoAgents); }
  void TearDown() override {
    mcp_.reset();
    if (app_) {
      EXPECT_TRUE(app_->Stop(std::chrono::seconds(5)).ok());
    }
  }

  void Start(const std::string& yaml) {
    app_ = server::testing::StartApp(dir_.path(), yaml);
    ASSERT_TRUE(app_);
    url_ = "http://" + app_->address();
    mcp_ = NewSession();
  }

  // A new MCP session against the test server.
  std::unique_ptr<McpServer> NewSession(McpServerOptions options = {}) {
    server::ClientOptions c;
    c.url = url_;
    return std::make_unique<McpServer>(NewHttpBackend(c), std::move(options));
  }

  // Sends `text` and returns every message answered, parsed.
  static std::vector<Json> SendText(McpServer& s, const std::string& text) {
    std::vector<Json> out;
    for (const std::string& m : s.Handle(text)) {
      Json j = Json::parse(m, nullptr, false);
      EXPECT_FALSE(j.is_discarded()) << m;
      out.push_back(std::move(j));
    }
    return out;
  }
  // Sends `msg`, expecting exactly one answer, and returns it.
  static Json Send(McpServer& s, const Json& msg) {
    std::vector<Json> r = SendText(s, msg.dump());
    EXPECT_EQ(r.size(), 1u) << msg.dump();
    return r.empty() ? Json() : r[0];
  }
  Json Send(const Json& msg) { return Send(*mcp_, msg); }

  static Json Request(const Json& id, const std::string& method,
                      Json params = Json::object()) {
    return Json{{"jsonrpc", "2.0"},
                {"id", id},
                {"method", method},
                {"params", std::move(params)}};
  }

  static Json Initialize(McpServer& s,
                         const std::string& version = "2025-06-18") {
    Json r = Send(
        s, Request(0, "initialize",
                   {{"protocolVersion", version},
                    {"capabilities", Json::object()},
                    {"clientInfo", {{"name", "mcp_test"}, {"version", "1"}}}}));
    s.Handle(R"({"jsonrpc": "2.0", "method": "notifications/initialized"})");
    return r;
  }
  Json Initialize() { return Initialize(*mcp_); }

  // Calls a tool; returns the CallToolResult (the response's result).
  Json CallTool(const std::string& name, const Json& args) {
    Json r = Send(Request(++next_id_, "tools/call",
                          {{"name", name}, {"arguments", args}}));
    EXPECT_TRUE(r.contains("result")) << r.dump();
    return r.contains("result") ? r["result"] : Json();
  }

  // Sends a request to the qm server directly and returns the envelope.
  Json Api(const std::string& method, const std::string& target,
           const std::string& body = "") {
    server::HttpClient c = server::testing::ClientOf(url_);
    auto r = c.Call(method, target, body, std::chrono::seconds(30));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return Json();
    return Json::parse(r->body, nullptr, false);
  }

  server::testing::TempDir dir_;
  std::unique_ptr<server::App> app_;
  std::string url_;
  std::unique_ptr<McpServer> mcp_;
  int next_id_ = 100;
};

// The requirements of a coder in workflow `w`.
inline Json Coder(const std::string& w) {
  return Json{{"workflow_id", w}, {"agent_type", "coder"}};
}

}  // namespace qm::mcp::testing

#endif  // QM_TESTS_MCP_MCP_TEST_UTIL_H_
