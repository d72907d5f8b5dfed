// Malformed JSON-RPC fed to McpServer: each gets the right JSON-RPC error
// (or, for notifications and responses, nothing), and the session keeps
// serving. Then seeded random mutations of valid messages: whatever comes
// in, every answer is a well-formed JSON-RPC response and the session
// still answers a ping.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "tests/mcp/mcp_test_util.h"

namespace qm::mcp::testing {
namespace {

class McpFuzzTest : public McpTest {
 protected:
  // The session still answers a ping with its id.
  void ExpectServing(const std::string& after) {
    Json r = Send(Request("still-there", "ping"));
    EXPECT_EQ(r["id"], "still-there") << "after " << after.substr(0, 200);
    EXPECT_EQ(r["result"], Json::object()) << "after " << after.substr(0, 200);
  }
};

// A well-formed response or error, with an id of an allowed type.
void ExpectWellFormed(const Json& m, const std::string& input) {
  const std::string in = input.substr(0, 200);
  ASSERT_TRUE(m.is_object()) << in << " -> " << m.dump();
  EXPECT_EQ(m["jsonrpc"], "2.0") << in;
  ASSERT_TRUE(m.contains("id")) << in << " -> " << m.dump();
  EXPECT_TRUE(m["id"].is_null() || m["id"].is_string() ||
              m["id"].is_number_integer())
      << in;
  EXPECT_NE(m.contains("result"), m.contains("error")) << in;
  if (m.contains("error")) {
    const int code = m["error"]["code"];
    EXPECT_TRUE(code == kParseError || code == kInvalidRequest ||
                code == kMethodNotFound || code == kInvalidParams ||
                code == kInternalError || code == kResourceNotFound)
        << in << " -> " << code;
    EXPECT_TRUE(m["error"]["message"].is_string());
  }
}

TEST_F(McpFuzzTest, MalformedMessagesGetTheRightErrors) {
  Initialize();
  struct Case {
    std::string text;
    int code;  // 0: no answer expected
    Json id;
  };
  const std::string huge =
      R"({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": ")" +
      std::string(5 << 20, 'a') + R"("}})";
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  const std::string deep_obj =
      R"({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"a": )" +
      std::string(70, '[') + std::string(70, ']') + "}}";
  const std::vector<Case> cases = {
      {"", kParseError, nullptr},
      {"{", kParseError, nullptr},
      {"not json", kParseError, nullptr},
      {R"({"jsonrpc": "2.0", "id": 1, "method": "ping",})", kParseError,
       nullptr},
      {"\xff\xfe{}", kParseError, nullptr},
      {R"({"jsonrpc": "2.0", "id": 1, "method": "\xc3\x28"})", kParseError,
       nullptr},
      {"null", kInvalidRequest, nullptr},
      {"42", kInvalidRequest, nullptr},
      {R"("ping")", kInvalidRequest, nullptr},
      {"[]", kInvalidRequest, nullptr},
      {R"([{"jsonrpc": "2.0", "id": 1, "method": "ping"}])", kInvalidRequest,
       nullptr},
      {huge, kInvalidRequest, nullptr},
      {deep, kInvalidRequest, nullptr},
      {deep_obj, kInvalidRequest, nullptr},
      {R"({"jsonrpc": "1.0", "id": 1, "method": "ping"})", kInvalidRequest, 1},
      {R"({"id": 1, "method": "ping"})", kInvalidRequest, 1},
      {R"({"jsonrpc": 2.0, "id": 1, "method": "ping"})", kInvalidRequest, 1},
      {R"({"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"})",
       kInvalidRequest, nullptr},
      {R"({"jsonrpc": "2.0", "id": [1], "method": "ping"})", kInvalidRequest,
       nullptr},
      {R"({"jsonrpc": "2.0", "id": true, "method": "ping"})", kInvalidRequest,
       nullptr},
      {R"({"jsonrpc": "2.0", "id": 1.5, "method": "ping"})", kInvalidRequest,
       nullptr},
      {R"({"jsonrpc": "2.0", "id": null, "method": "ping"})", kInvalidRequest,
       nullptr},
      {R"({"jsonrpc": "2.0", "id": 1, "method": 5})", kInvalidRequest, 1},
      {R"({"jsonrpc": "2.0", "id": 1, "method": null})", kInvalidRequest, 1},
      {R"({"jsonrpc": "2.0", "id": 1})", kInvalidRequest, 1},
      {R"({"jsonrpc": "2.0", "id": "x", "method": "nope"})", kMethodNotFound,
       "x"},
      {R"({"jsonrpc": "2.0", "id": 3, "method": "prompts/list"})",
       kMethodNotFound, 3},
      {R"({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": [1]})",
       kInvalidParams, 1},
      {R"({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": "x"})",
       kInvalidParams, 1},
      {R"({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"cursor": "p2"}})",
       kInvalidParams, 1},
      {R"({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}})",
       kInvalidParams, 1},
      {R"({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": 3}})",
       kInvalidParams, 1},
      {R"({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "rm_rf"}})",
       kInvalidParams, 1},
      {R"({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "resource_monitor", "arguments": [1]}})",
       kInvalidParams, 1},
      {R"({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {}})",
       kInvalidParams, 1},
      {R"({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "file:///etc/passwd"}})",
       kResourceNotFound, 1},
      // Notifications (known or not, well-formed params or not) and
      // responses: no answer.
      {R"({"jsonrpc": "2.0", "method": "notifications/whatever"})", 0, nullptr},
      {R"({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": 3})",
       0, nullptr},
      {R"({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}})",
       0, nullptr},
      {R"({"jsonrpc": "2.0", "id": 5, "result": {}})", 0, nullptr},
      {R"({"jsonrpc": "2.0", "id": 5, "error": {"code": 1, "message": "x"}})",
       0, nullptr},
  };
  for (const Case& c : cases) {
    std::vector<Json> out = SendText(*mcp_, c.text);
    const std::string shown = c.text.substr(0, 120);
    if (c.code == 0) {
      EXPECT_TRUE(out.empty()) << shown << " -> " << out[0].dump();
    } else {
      ASSERT_EQ(out.size(), 1u) << shown;
      ExpectWellFormed(out[0], c.text);
      EXPECT_EQ(out[0]["error"]["code"], c.code)
          << shown << " -> " << out[0].dump();
      EXPECT_EQ(out[0]["id"], c.id) << shown << " -> " << out[0].dump();
    }
    ExpectServing(c.text);
  }
  // Still a working session after all that.
  Json tools = Send(Request(1, "tools/list"));
  EXPECT_EQ(tools["result"]["tools"].size(), 8u);
}

TEST_F(McpFuzzTest, IdsAreEchoedExactly) {
  Initialize();
  for (const Json& id : {Json(0), Json(-7), Json(9007199254740993LL),
                         Json(18446744073709551615ULL), Json(""),
                         Json("é ✓ \"quoted\""), Json("123")}) {
    Json r = Send(Request(id, "ping"));
    EXPECT_EQ(r["id"], id) << r.dump();
    EXPECT_EQ(r["id"].is_string(), id.is_string()) << r.dump();
  }
  // As text too: 1e2 is a number, not an integer id.
  std::vector<Json> out =
      SendText(*mcp_, R"({"jsonrpc": "2.0", "id": 1e2, "method": "ping"})");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["error"]["code"], kInvalidRequest);
}

TEST_F(McpFuzzTest, BatchesOnlyIn2025_03_26) {
  auto s = NewSession();
  Initialize(*s, "2025-03-26");
  std::vector<Json> out = SendText(*s, R"([
    {"jsonrpc": "2.0", "id": 1, "method": "ping"},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": "b", "method": "tools/list"},
    {"jsonrpc": "2.0", "id": 3, "method": "nope"},
    7
  ])");
  ASSERT_EQ(out.size(), 1u);
  const Json& batch = out[0];
  ASSERT_TRUE(batch.is_array()) << batch.dump();
  ASSERT_EQ(batch.size(), 4u) << batch.dump();
  EXPECT_EQ(batch[0]["id"], 1);
  EXPECT_EQ(batch[1]["id"], "b");
  EXPECT_EQ(batch[1]["result"]["tools"].size(), 8u);
  EXPECT_EQ(batch[2]["error"]["code"], kMethodNotFound);
  EXPECT_EQ(batch[3]["error"]["code"], kInvalidRequest);
  // Only notifications: nothing to answer.
  EXPECT_TRUE(s->Handle(R"([{"jsonrpc": "2.0", "method": "notifications/x"}])")
                  .empty());
  // An empty batch, and initialize in a batch, are refused.
  std::vector<Json> empty = SendText(*s, "[]");
  ASSERT_EQ(empty.size(), 1u);
  EXPECT_EQ(empty[0]["error"]["code"], kInvalidRequest);
  std::vector<Json> init = SendText(
      *s,
      R"([{"jsonrpc": "2.0", "id": 9, "method": "initialize", "params": {"protocolVersion": "2025-03-26"}}])");
  ASSERT_EQ(init.size(), 1u);
  EXPECT_EQ(init[0][0]["error"]["code"], kInvalidRequest) << init[0].dump();

  // The same batch under 2025-06-18: refused whole.
  Initialize();
  std::vector<Json> refused =
      SendText(*mcp_, R"([{"jsonrpc": "2.0", "id": 1, "method": "ping"}])");
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0]["error"]["code"], kInvalidRequest);
}

TEST_F(McpFuzzTest, RandomMutationsOfValidMessages) {
  Initialize();
  const std::vector<std::string> seeds = {
      R"({"jsonrpc": "2.0", "id": 1, "method": "ping"})",
      R"({"jsonrpc": "2.0", "id": "t", "method": "tools/list", "params": {}})",
      R"({"jsonrpc": "2.0", "id": 2, "method": "resources/list"})",
      R"({"jsonrpc": "2.0", "id": 3, "method": "resources/read", "params": {"uri": "qm://status"}})",
      R"({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "resource_monitor", "arguments": {"format": "dashboard", "filters": {"product": "web"}}}})",
      R"({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "resource_check_conflicts", "arguments": {"requirements": {"workflow_id": "w", "agent_type": "coder", "exclusive_access": ["a.txt"]}, "priority": "high"}}})",
      R"({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "resource_analytics", "arguments": {"metrics": ["usage"], "group_by": ["product"]}}})",
      R"({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 4}})",
  };
  const std::string alphabet = "{}[]\",:0123456789-.eE truefalsnul\\\x01\xc3";
  std::mt19937 rng(20260126);
  int answered = 0;
  for (int i = 0; i < 600; ++i) {
    std::string m = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !m.empty(); ++e) {
      const size_t at = rng() % m.size();
      switch (rng() % 4) {
        case 0:  // replace a byte
          m[at] = alphabet[rng() % alphabet.size()];
          break;
        case 1:  // insert one
          m.insert(m.begin() + at, alphabet[rng() % alphabet.size()]);
          break;
        case 2:  // delete one
          m.erase(at, 1);
          break;
        default:  // truncate
          m.resize(at);
      }
    }
    for (const Json& out : SendText(*mcp_, m)) {
      ++answered;
      ExpectWellFormed(out, m);
    }
    if (::testing::Test::HasFailure()) break;
  }
  EXPECT_GT(answered, 300);
  ExpectServing("the mutations");
  Json tools = Send(Request(1, "tools/list"));
  EXPECT_EQ(tools["result"]["tools"].size(), 8u);
}

}  // namespace
}  // namespace qm::mcp::testing
