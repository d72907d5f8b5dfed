// The JSON codec's conflict-prevention side: lock paths, workflow avoidance
// and reservation ids in requests, the allocation's locks and warnings,
// conflicts, the check-conflicts report, lock verdicts, reservations, the
// reserve and prevent-conflicts requests, and the new events.
#include <gtest/gtest.h>

#include "api/json_codec.h"

namespace qm {
namespace {

using api::Json;

Time At(const char* text) {
  Time t{};
  EXPECT_TRUE(ParseTime(text, &t)) << text;
  return t;
}

std::string Error(const StatusOr<AllocationRequest>& r) {
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidRequest) << r.status().ToString();
  return r.status().message();
}

// ---- Requests ----

TEST(CodecConflictsTest, RequestTakesLocksAvoidanceAndReservation) {
  auto r = api::RequestFromJson(Json::parse(R"j({
      "workflow_id": "w",
      "exclusive_access": ["src/app.ts", "src/lib/"],
      "shared_access": ["docs/**/*.md"],
      "conflict_avoidance": ["other_workflow_456"],
      "reservation_id": "res_789"})j"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exclusive_access,
            (std::vector<std::string>{"src/app.ts", "src/lib/"}));
  EXPECT_EQ(r->shared_access, std::vector<std::string>{"docs/**/*.md"});
  EXPECT_EQ(r->conflict_avoidance,
            std::vector<std::string>{"other_workflow_456"});
  EXPECT_EQ(r->reservation_id, "res_789");

  // Nothing named: nothing set.
  auto plain = api::RequestFromJson(Json{{"workflow_id", "w"}});
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->exclusive_access.empty());
  EXPECT_TRUE(plain->shared_access.empty());
  EXPECT_TRUE(plain->conflict_avoidance.empty());
  EXPECT_EQ(plain->reservation_id, "");
}

TEST(CodecConflictsTest, RequestTakesTheSeedsShapes) {
  // Seed 000's allocation schema: constraints.exclusive_access and
  // constraints.conflict_avoidance.
  auto r = api::RequestFromJson(Json::parse(R"j({
      "workflow_id": "workflow_123",
      "constraints": {"max_duration": "2h",
                      "exclusive_access": ["critical_file.nix"],
                      "shared_access": ["flake.lock"],
                      "conflict_avoidance": ["other_workflow_456"]}})j"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exclusive_access, std::vector<std::string>{"critical_file.nix"});
  EXPECT_EQ(r->shared_access, std::vector<std::string>{"flake.lock"});
  EXPECT_EQ(r->conflict_avoidance,
            std::vector<std::string>{"other_workflow_456"});
  EXPECT_EQ(r->max_duration, std::chrono::hours(2));

  // Seed 000's allocate example: exclusive_files.
  auto files = api::RequestFromJson(Json::parse(R"j({
      "workflow_id": "workflow_456", "duration": "3h",
      "exclusive_files": ["critical_config.nix"]})j"));
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  EXPECT_EQ(files->exclusive_access,
            std::vector<std::string>{"critical_config.nix"});

  // Named in several places: all of them count.
  auto both = api::RequestFromJson(Json::parse(R"j({
      "exclusive_access": ["a"], "exclusive_files": ["b"],
      "constraints": {"exclusive_access": ["c"]}})j"));
  ASSERT_TRUE(both.ok()) << both.status().ToString();
  EXPECT_EQ(both->exclusive_access, (std::vector<std::string>{"a", "b", "c"}));
}

TEST(CodecConflictsTest, RequestErrorsNameTheFieldAndIndex) {
  EXPECT_EQ(Error(api::RequestFromJson(
                Json::parse(R"j({"exclusive_access": ["a", "b", 3]})j"))),
            "exclusive_access[2] must be a string, got a number");
  EXPECT_EQ(Error(api::RequestFromJson(
                Json::parse(R"j({"shared_access": "src/"})j"))),
            "shared_access must be an array of strings, got a string");
  EXPECT_EQ(Error(api::RequestFromJson(
                Json::parse(R"j({"conflict_avoidance": [null]})j"))),
            "conflict_avoidance[0] must be a string, got null");
  EXPECT_EQ(Error(api::RequestFromJson(
                Json::parse(R"j({"exclusive_files": [["x"]]})j"))),
            "exclusive_files[0] must be a string, got an array");
  EXPECT_EQ(
      Error(api::RequestFromJson(Json::parse(R"j({"reservation_id": 7})j"))),
      "reservation_id must be a string, got a number");
  EXPECT_EQ(
      Error(api::RequestFromJson(
          Json::parse(R"j({"constraints": {"exclusive_access": [1]}})j"),
          "requests[3].")),
      "requests[3].constraints.exclusive_access[0] must be a string, got a "
      "number");
  const std::string typo = Error(api::RequestFromJson(
      Json::parse(R"j({"constraints": {"exclusive_acess": []}})j")));
  EXPECT_NE(typo.find("did you mean \"exclusive_access\""), std::string::npos)
      << typo;
}

// ---- Allocations ----

TEST(CodecConflictsTest, AllocationShowsLocksOnlyWhenItHasThem) {
  AllocationInfo a;
  a.id = "alloc_1";
  const Json plain = api::ToJson(a);
  for (const char* key :
       {"locks", "conflict_avoidance", "reservation_id", "warnings"}) {
    EXPECT_FALSE(plain.contains(key)) << key;
  }

  a.locks = {{"src/app.ts", true}, {"docs", false}};
  a.conflict_avoidance = {"wf_9"};
  a.reservation_id = "res_1";
  a.warnings = {"conf_4: exclusive lock on src/app.ts is held by alloc_2"};
  const Json j = api::ToJson(a);
  EXPECT_EQ(j["locks"], Json::parse(R"j([
      {"path": "src/app.ts", "mode": "exclusive"},
      {"path": "docs", "mode": "shared"}])j"));
  EXPECT_EQ(j["conflict_avoidance"], Json::parse(R"j(["wf_9"])j"));
  EXPECT_EQ(j["reservation_id"], "res_1");
  EXPECT_EQ(j["warnings"][0],
            "conf_4: exclusive lock on src/app.ts is held by alloc_2");
}

// ---- Conflicts ----

ConflictInfo FileConflict() {
  ConflictInfo c;
  c.id = "conf_3";
  c.type = "file_conflict";
  c.severity = "high";
  c.message = "File access conflict detected for home.nix";
  c.recommended_action = "Wait for alloc_2 to release, or resolve-conflicts";
  c.subject = "home.nix";
  c.holder = "alloc_2";
  c.since = At("2026-01-26T14:00:00Z");
  c.expected_release = At("2026-01-26T14:32:00Z");
  c.waiter = "alloc_5";
  c.detected_at = At("2026-01-26T14:10:00Z");
  return c;
}

TEST(CodecConflictsTest, ConflictHasTheSeedsAlertShapeFirst) {
  const Json j = api::ToJson(FileConflict());
  EXPECT_EQ(j.dump(),
            Json::parse(R"j({"type": "file_conflict", "severity": "high",
      "message": "File access conflict detected for home.nix",
      "recommended_action": "Wait for alloc_2 to release, or resolve-conflicts",
      "id": "conf_3", "subject": "home.nix", "holder": "alloc_2",
      "since": "2026-01-26T14:00:00Z",
      "expected_release": "2026-01-26T14:32:00Z", "waiter": "alloc_5",
      "status": "open", "detected_at": "2026-01-26T14:10:00Z"})j")
                .dump());

  ConflictInfo resolved = FileConflict();
  resolved.status = "resolved";
  resolved.resolution = "priority_based: alloc_2 preempted by ceo";
  resolved.resolved_at = At("2026-01-26T14:11:00Z");
  const Json r = api::ToJson(resolved);
  EXPECT_EQ(r["status"], "resolved");
  EXPECT_EQ(r["resolution"], "priority_based: alloc_2 preempted by ceo");
  EXPECT_EQ(r["resolved_at"], "2026-01-26T14:11:00Z");
}

TEST(CodecConflictsTest, DryRunConflictsLeaveUnsetFieldsOut) {
  ConflictInfo c;
  c.type = "reservation_conflict";
  c.severity = "medium";
  c.message = "res_1 books 3 agents from 15:00";
  c.starts_at = At("2026-01-26T15:00:00Z");
  const Json j = api::ToJson(c);
  EXPECT_EQ(j, Json::parse(R"j({"type": "reservation_conflict",
      "severity": "medium", "message": "res_1 books 3 agents from 15:00",
      "recommended_action": "", "starts_at": "2026-01-26T15:00:00Z",
      "status": "open"})j"));
}

TEST(CodecConflictsTest, ConflictReport) {
  ConflictReport r;
  r.time = At("2026-01-26T14:00:00Z");
  r.horizon = std::chrono::hours(4);
  r.outcome = "queue";
  r.reason = "waiting for exclusive lock on home.nix held by alloc_2";
  r.conflicts = {FileConflict()};
  const Json j = api::ToJson(r);
  EXPECT_EQ(j["time"], "2026-01-26T14:00:00Z");
  EXPECT_EQ(j["horizon"], "4h");
  EXPECT_EQ(j["outcome"], "queue");
  EXPECT_EQ(j["reason"], r.reason);
  EXPECT_EQ(j["conflicts_found"], 1);
  ASSERT_EQ(j["conflicts"].size(), 1u);
  EXPECT_EQ(j["conflicts"][0]["id"], "conf_3");

  const Json none = api::ToJson(ConflictReport{});
  EXPECT_EQ(none["horizon"], "0s");
  EXPECT_EQ(none["conflicts_found"], 0);
  EXPECT_EQ(none["conflicts"], Json::array());
}

TEST(CodecConflictsTest, LockVerdict) {
  LockVerdict v;
  v.path = "src/app.ts";
  v.token = 12;
  v.valid = true;
  v.holder = "alloc_4";
  v.exclusive = true;
  v.message = "alloc_4 holds an exclusive lock on src";
  v.holders = {{"alloc_4", 12}};
  EXPECT_EQ(api::ToJson(v), Json::parse(R"j({"path": "src/app.ts",
      "token": 12, "valid": true, "holder": "alloc_4", "mode": "exclusive",
      "message": "alloc_4 holds an exclusive lock on src",
      "holders": [{"allocation_id": "alloc_4", "fencing_token": 12}]})j"));

  LockVerdict stale;
  stale.path = "src/app.ts";
  stale.token = 3;
  stale.message = "token 3 holds no lock on src/app.ts";
  const Json s = api::ToJson(stale);
  EXPECT_FALSE(s["valid"].get<bool>());
  EXPECT_TRUE(s["holder"].is_null());
  EXPECT_TRUE(s["mode"].is_null());
  EXPECT_EQ(s["holders"], Json::array());
}

// ---- Reservations ----

TEST(CodecConflictsTest, ReservationInfo) {
  ReservationInfo r;
  r.id = "res_789";
  r.workflow_id = "wf";
  r.level = Level::kHigh;
  r.priority_value = 80;
  r.resources = {{"agents", 8}};
  r.start_time = At("2025-01-15T15:00:00Z");
  r.duration = std::chrono::hours(2);
  r.status = "open";
  r.window_start = r.start_time;
  r.window_end = At("2025-01-15T17:00:00Z");
  r.grace_ends_at = At("2025-01-15T15:15:00Z");
  r.claimed = {{"agents", 2}};
  r.holders = {"alloc_7"};
  r.metadata = R"({"team":"web"})";
  const Json j = api::ToJson(r);
  EXPECT_EQ(j["reservation_id"], "res_789");
  EXPECT_EQ(j["status"], "open");
  EXPECT_EQ(j["priority"], "high");
  EXPECT_EQ(j["priority_value"], 80);
  EXPECT_EQ(j["resources"], Json::parse(R"j({"agents": 8})j"));
  EXPECT_EQ(j["start_time"], "2025-01-15T15:00:00Z");
  EXPECT_EQ(j["duration"], "2h");
  EXPECT_TRUE(j["recurrence"].is_null());
  EXPECT_FALSE(j.contains("until"));
  EXPECT_EQ(j["window_end"], "2025-01-15T17:00:00Z");
  EXPECT_EQ(j["grace_ends_at"], "2025-01-15T15:15:00Z");
  EXPECT_FALSE(j["grace_over"].get<bool>());
  EXPECT_EQ(j["claimed"], Json::parse(R"j({"agents": 2})j"));
  EXPECT_EQ(j["holders"], Json::parse(R"j(["alloc_7"])j"));
  EXPECT_FALSE(j.contains("warnings"));
  EXPECT_EQ(j["metadata"]["team"], "web");
}

TEST(CodecConflictsTest, ReserveTakesTheSeedsRequest) {
  const Time now = At("2025-01-15T12:00:00Z");
  auto r = api::ReservationFromJson(Json::parse(R"j({
      "reservation_id": "res_789",
      "start_time": "2025-01-15T15:00:00Z",
      "duration": "2h",
      "resources": {"agents": 8},
      "priority": "medium"})j"),
                                    now);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->reservation_id, "res_789");
  EXPECT_EQ(r->start_time, At("2025-01-15T15:00:00Z"));
  EXPECT_EQ(r->duration, std::chrono::hours(2));
  EXPECT_EQ(r->resources, (ResourceAmounts{{"agents", 8}}));
  EXPECT_EQ(r->priority, "medium");
  EXPECT_EQ(r->recurrence, "");
  EXPECT_FALSE(r->until.has_value());

  auto all = api::ReservationFromJson(Json::parse(R"j({
      "workflow_id": "nightly", "product": "web", "agent_type": "qa",
      "requester": "hub", "priority": 70, "start_time": "+1h30m",
      "duration": 3600, "recurrence": "daily",
      "until": "2025-02-01T00:00:00Z", "metadata": {"why": "release"}})j"),
                                      now);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(all->workflow_id, "nightly");
  EXPECT_EQ(all->product, "web");
  EXPECT_EQ(all->agent_type, "qa");
  EXPECT_EQ(all->requester, "hub");
  EXPECT_EQ(all->priority, "70");
  EXPECT_EQ(all->start_time, At("2025-01-15T13:30:00Z"));
  EXPECT_EQ(all->duration, std::chrono::hours(1));
  EXPECT_EQ(all->recurrence, "daily");
  EXPECT_EQ(all->until, At("2025-02-01T00:00:00Z"));
  EXPECT_EQ(all->metadata, R"({"why":"release"})");
}

TEST(CodecConflictsTest, ReserveErrorsNameTheField) {
  const Time now = At("2025-01-15T12:00:00Z");
  auto error = [&](const char* json) {
    auto r = api::ReservationFromJson(Json::parse(json), now);
    EXPECT_FALSE(r.ok()) << json;
    EXPECT_EQ(r.status().code(), Code::kInvalidRequest);
    return r.status().message();
  };
  const std::string window =
      R"j("start_time": "2025-01-15T15:00:00Z", "duration": "2h")j";
  EXPECT_EQ(error(R"j({"duration": "2h"})j"),
            "start_time is required: when the window starts (RFC 3339, e.g. "
            "\"2026-01-26T15:00:00Z\")");
  EXPECT_EQ(error(R"j({"start_time": "2025-01-15T15:00:00Z"})j"),
            "duration is required: how long the window lasts (\"2h\" or "
            "seconds)");
  EXPECT_EQ(error(R"j({"start_time": "tomorrow", "duration": "2h"})j"),
            "start_time must be an RFC 3339 UTC time such as "
            "\"2026-01-26T15:00:00Z\" or an offset from now such as \"+2h\", "
            "got \"tomorrow\"");
  EXPECT_EQ(error(R"j({"start_time": 5, "duration": "2h"})j"),
            "start_time must be a time such as \"2026-01-26T15:00:00Z\", got "
            "a number");
  EXPECT_EQ(error(("{" + window + R"j(, "duration": "long"})j").c_str()),
            "duration must be a duration such as \"30s\", \"15m\", \"2h\" or "
            "\"1h30m\", got \"long\"");
  EXPECT_EQ(error(("{" + window + R"j(, "recurrence": "dayly"})j").c_str()),
            "recurrence must be daily or weekly (or null for once), got "
            "\"dayly\"; did you mean \"daily\"?");
  EXPECT_EQ(
      error(("{" + window + R"j(, "until": "2025-02-01T00:00:00Z"})j").c_str()),
      "until applies only to a recurring reservation; give recurrence daily "
      "or weekly, or leave until out");
  EXPECT_EQ(error(("{" + window + R"j(, "priority": 101})j").c_str()),
            "priority must be an integer 0-100 or one of "
            "critical|high|normal|low, got 101");
  EXPECT_EQ(
      error(("{" + window + R"j(, "resources": {"agents": "8"}})j").c_str()),
      "resources.agents must be a number, got a string");
  EXPECT_EQ(error(("{" + window + R"j(, "workflow_di": "w"})j").c_str()),
            "workflow_di: unknown field; did you mean \"workflow_id\"?");
  EXPECT_EQ(error("[]"), "reservation must be a JSON object, got an array");
}

// ---- prevent-conflicts ----

TEST(CodecConflictsTest, PreventConflictsTakesTheSeedsPolicy) {
  auto p = api::LockPolicyFromJson(Json::parse(R"j({
      "policy_type": "file_locking", "scope": "global",
      "enforcement": "strict", "exceptions": ["read_only_operations"]})j"));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->scope, "global");
  ASSERT_TRUE(p->policy.has_value());
  EXPECT_EQ(*p->policy,
            (LockPolicy{LockEnforcement::kStrict, {"read_only_operations"}}));

  // Scope defaults to global; exceptions to none.
  auto advisory = api::LockPolicyFromJson(Json::parse(
      R"j({"policy_type": "file_locking", "enforcement": "advisory"})j"));
  ASSERT_TRUE(advisory.ok()) << advisory.status().ToString();
  EXPECT_EQ(advisory->scope, "global");
  EXPECT_EQ(*advisory->policy, (LockPolicy{LockEnforcement::kAdvisory, {}}));

  // A product's own policy, and removing it again.
  auto web = api::LockPolicyFromJson(Json::parse(
      R"j({"policy_type": "file_locking", "scope": "web",
           "enforcement": "advisory"})j"));
  ASSERT_TRUE(web.ok());
  EXPECT_EQ(web->scope, "web");
  EXPECT_TRUE(web->policy.has_value());
  for (const char* inherit : {R"j("inherit")j", "null"}) {
    auto drop = api::LockPolicyFromJson(Json::parse(
        std::string(R"j({"policy_type": "file_locking", "scope": "web",
           "enforcement": )j") +
        inherit + "}"));
    ASSERT_TRUE(drop.ok()) << inherit << ": " << drop.status().ToString();
    EXPECT_EQ(drop->scope, "web");
    EXPECT_FALSE(drop->policy.has_value());
  }
}

TEST(CodecConflictsTest, PreventConflictsErrors) {
  auto error = [](const char* json) {
    auto p = api::LockPolicyFromJson(Json::parse(json));
    EXPECT_FALSE(p.ok()) << json;
    EXPECT_EQ(p.status().code(), Code::kInvalidRequest);
    return p.status().message();
  };
  EXPECT_EQ(error(R"j({"enforcement": "strict"})j"),
            "policy_type is required: file_locking");
  EXPECT_EQ(error(R"j({"policy_type": "rate_limiting",
                       "enforcement": "strict"})j"),
            "policy_type must be file_locking (the one policy type), got "
            "\"rate_limiting\"");
  EXPECT_EQ(error(R"j({"policy_type": "file_locking"})j"),
            "enforcement is required: strict (conflicting requests queue) or "
            "advisory (they are granted with a warning)");
  EXPECT_EQ(error(R"j({"policy_type": "file_locking", "scope": "web"})j"),
            "enforcement is required: strict (conflicting requests queue) or "
            "advisory (they are granted with a warning), or inherit to remove "
            "the product's own policy");
  EXPECT_EQ(error(R"j({"policy_type": "file_locking",
                       "enforcement": "strikt"})j"),
            "enforcement must be strict, advisory or inherit, got \"strikt\"; "
            "did you mean \"strict\"?");
  EXPECT_EQ(error(R"j({"policy_type": "file_locking",
                       "enforcement": "inherit"})j"),
            "enforcement: the global policy cannot inherit; give strict or "
            "advisory");
  EXPECT_EQ(error(R"j({"policy_type": "file_locking", "scope": "web",
                       "enforcement": "inherit",
                       "exceptions": ["read_only_operations"]})j"),
            "exceptions: a product that inherits the global policy takes its "
            "exceptions too; leave exceptions out");
  EXPECT_EQ(error(R"j({"policy_type": "file_locking", "enforcement": "strict",
                       "exceptions": ["read_only_operations", "reads"]})j"),
            "exceptions[1]: unknown exception \"reads\" (the one exception "
            "known is read_only_operations)");
  EXPECT_EQ(error(R"j({"policy_type": "file_locking", "enforcement": "strict",
                       "exceptions": ["read_only_operation"]})j"),
            "exceptions[0]: unknown exception \"read_only_operation\" (the one "
            "exception known is read_only_operations); did you mean "
            "\"read_only_operations\"?");
  EXPECT_EQ(error(R"j({"policy_type": "file_locking", "enforcement": "strict",
                       "exceptions": [1]})j"),
            "exceptions[0] must be a string, got a number");
  EXPECT_EQ(error(R"j({"policy_type": "file_locking", "enforcement": "strict",
                       "scope": ""})j"),
            "scope must be global or a product name");
  EXPECT_EQ(error(R"j({"policy_type": "file_locking", "enforcement": "strict",
                       "scopes": "web"})j"),
            "scopes: unknown field; did you mean \"scope\"?");
}

// ---- Events ----

TEST(CodecConflictsTest, NewEventTypesHaveNamesAndRender) {
  struct Case {
    EventType type;
    const char* name;
  } cases[] = {
      {EventType::kConflictDetected, "conflict_detected"},
      {EventType::kConflictResolved, "conflict_resolved"},
      {EventType::kReserved, "reserved"},
      {EventType::kReservationStarted, "reservation_started"},
      {EventType::kReservationEnded, "reservation_ended"},
      {EventType::kReservationCancelled, "reservation_cancelled"},
  };
  for (const Case& c : cases) {
    EXPECT_STREQ(EventTypeName(c.type), c.name);
  }

  Event detected;
  detected.seq = 4;
  detected.time = At("2026-01-26T14:10:00Z");
  detected.type = EventType::kConflictDetected;
  detected.allocation_id = "alloc_5";
  detected.reason = "conf_3: exclusive lock on home.nix held by alloc_2";
  const Json d = api::ToJson(detected);
  EXPECT_EQ(d["type"], "conflict_detected");
  EXPECT_EQ(d["allocation_id"], "alloc_5");
  EXPECT_EQ(d["status"], "queued");
  EXPECT_EQ(d["reason"], detected.reason);

  Event reserved;
  reserved.seq = 5;
  reserved.time = At("2026-01-26T14:00:00Z");
  reserved.type = EventType::kReservationCancelled;
  reserved.allocation_id = "res_1";
  reserved.product = "web";
  reserved.level = Level::kHigh;
  reserved.actor = "ceo";
  reserved.reason = "release moved";
  EXPECT_EQ(api::ToJson(reserved), Json::parse(R"j({"seq": 5,
      "time": "2026-01-26T14:00:00Z", "type": "reservation_cancelled",
      "reservation_id": "res_1", "reason": "release moved",
      "product": "web", "priority": "high", "actor": "ceo"})j"));
}

}  // namespace
}  // namespace qm
