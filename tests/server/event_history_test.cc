// The event history across a restart: the recovery regenerates the events
// of the journal after its snapshot, so a client that resumes its stream
// from one of them gets the rest instead of a reset.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/server/test_util.h"

namespace qm::server {
namespace {

using Json = nlohmann::json;

TEST(EventHistoryTest, AStreamResumesAcrossARestart) {
  testing::TempDir dir;
  std::vector<Json> before;
  {
    auto app = testing::StartApp(dir.path(), "resources:\n  agents: 2\n");
    ASSERT_NE(app, nullptr);
    HttpClient client = testing::ClientOf("http://" + app->address());
    for (int i = 0; i < 3; ++i) {
      auto r = client.Call("POST", "/v1/allocations",
                           Json{{"workflow_id", "wf" + std::to_string(i)},
                                {"agent_type", "dev"},
                                {"ttl", "1h"}}
                               .dump());
      ASSERT_TRUE(r.ok());
      ASSERT_EQ(r->status, 200) << r->body;
    }
    Status s = client.Stream(
        "/v1/events?after=0",
        [&](const std::string& id, const std::string& /*event*/,
            const std::string& data) {
          if (id.empty()) return true;
          before.push_back(Json::parse(data));
          return before.size() < 3;  // granted, granted, queued
        },
        std::chrono::seconds(5));
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_TRUE(app->Stop(std::chrono::seconds(5)).ok());
  }
  ASSERT_EQ(before.size(), 3u);
  auto app = testing::StartApp(dir.path(), "resources:\n  agents: 2\n");
  ASSERT_NE(app, nullptr);
  HttpClient client = testing::ClientOf("http://" + app->address());
  // Resume after the first event, as a browser would reconnect.
  std::vector<Json> after;
  bool reset = false;
  Status s = client.Stream(
      "/v1/events",
      [&](const std::string& id, const std::string& event,
          const std::string& data) {
        if (event == "reset") reset = true;
        if (id.empty()) return true;
        after.push_back(Json::parse(data));
        return after.size() < 2;
      },
      std::chrono::seconds(5),
      {{"Last-Event-ID", std::to_string(before[0]["seq"].get<uint64_t>())}});
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_FALSE(reset);
  ASSERT_EQ(after.size(), 2u);
  // The same events, seqs and all, as before the restart.
  EXPECT_EQ(after[0], before[1]);
  EXPECT_EQ(after[1], before[2]);
}

}  // namespace
}  // namespace qm::server
