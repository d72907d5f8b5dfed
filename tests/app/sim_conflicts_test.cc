// The simulator's conflict and reservation operations: how they are parsed,
// what they print, and their errors (scenario mistakes stop the run with
// file:line:column; requests the codec or the engine refuses are printed
// and the run goes on).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "sim/simulator.h"
#include "tests/app/sim_test_util.h"

namespace qm {
namespace {

using Json = nlohmann::json;
using sim_test::Find;
using sim_test::FindAll;
using sim_test::RunYaml;
using sim_test::SimRun;

constexpr char kRoot[] = "config:\n  conflicts: {workspace_root: /work/repo}\n";

TEST(SimConflictsTest, MalformedOperationsNameTheirPosition) {
  struct Case {
    const char* yaml;
    const char* expect;
  };
  const Case cases[] = {
      {"timeline:\n  - at: 0m\n    check_conflict: {}\n",
       "s.yaml:3:5: check_conflict: unknown timeline key; did you mean "
       "\"check_conflicts\"?"},
      {"timeline:\n  - at: 0m\n    check_conflicts: {time_horizon: 4h}\n",
       "s.yaml:3:22: check_conflicts: needs one of `request: {...}`"},
      {"timeline:\n  - at: 0m\n    check_conflicts: {request: {}, "
       "proposed_allocation: {}}\n",
       "s.yaml:3:22: check_conflicts: needs one of"},
      {"timeline:\n  - at: 0m\n    check_conflicts: {request: {}, "
       "time_horizn: 4h}\n",
       "s.yaml:3:36: check_conflicts.time_horizn: unknown key (known: "
       "request, proposed_allocation, check_future, time_horizon); did you "
       "mean \"time_horizon\"?"},
      {"timeline:\n  - at: 0m\n    check_conflicts: {request: {}, "
       "time_horizon: soon}\n",
       "s.yaml:3:50: check_conflicts.time_horizon must be a duration"},
      {"timeline:\n  - at: 0m\n    check_conflicts: {request: {}, "
       "check_future: maybe}\n",
       "s.yaml:3:50: check_conflicts.check_future: must be true or false"},
      {"timeline:\n  - at: 0m\n    check_conflicts: {proposed_allocation: "
       "[a]}\n",
       "s.yaml:3:44: check_conflicts.proposed_allocation: must be a mapping"},
      {"timeline:\n  - at: 0m\n    check_conflicts: {request: {id: a, "
       "run_for: soon}}\n",
       "s.yaml:3:40: run_for: must be a duration"},
      {"timeline:\n  - at: 0m\n    resolve_conflict: {conflict: conf_1}\n",
       "s.yaml:3:23: resolve_conflict: needs {conflict: <conf id> or waiter: "
       "<allocation id>, strategy}"},
      {"timeline:\n  - at: 0m\n    resolve_conflict: {conflict: conf_1, "
       "waiter: a, strategy: priority_based}\n",
       "s.yaml:3:23: resolve_conflict: needs"},
      {"timeline:\n  - at: 0m\n    resolve_conflict: {waiter: ghost, "
       "strategy: priority_based}\n",
       "s.yaml:3:32: resolve_conflict.waiter: no allocation with id "
       "\"ghost\" was made earlier in this scenario"},
      {"timeline:\n  - at: 0m\n    resolve_conflict: {conflict: conf_1, "
       "strategy: priority_based, who: ceo}\n",
       "s.yaml:3:68: resolve_conflict.who: unknown key"},
      {"timeline:\n  - at: 0m\n    prevent_conflicts: file_locking\n",
       "s.yaml:3:24: prevent_conflicts: must be a mapping"},
      {"timeline:\n  - at: 0m\n    prevent_conflicts: {policy: x}\n",
       "s.yaml:3:25: prevent_conflicts.policy: unknown key"},
      {"timeline:\n  - at: 0m\n    lock_verify: {token: 3}\n",
       "s.yaml:3:18: lock_verify: needs {path, token} or {path, id}"},
      {"timeline:\n  - at: 0m\n    lock_verify: {path: a, token: 3, id: x}\n",
       "s.yaml:3:18: lock_verify: needs {path, token} or {path, id}"},
      {"timeline:\n  - at: 0m\n    lock_verify: {path: a, token: 0}\n",
       "s.yaml:3:35: lock_verify.token: must be a whole number >= 1"},
      {"timeline:\n  - at: 0m\n    lock_verify: {path: a, token: abc}\n",
       "s.yaml:3:35: lock_verify.token: must be a whole number >= 1"},
      {"timeline:\n  - at: 0m\n    lock_verify: {path: [a], token: 1}\n",
       "s.yaml:3:25: lock_verify.path: must be a path"},
      {"timeline:\n  - at: 0m\n    lock_verify: {path: a, id: ghost}\n",
       "s.yaml:3:18: lock_verify: no allocation with id \"ghost\""},
      {"timeline:\n  - at: 0m\n    conflicts: {open: 1}\n",
       "s.yaml:3:17: conflicts.open: unknown key (it takes none)"},
      {"timeline:\n  - at: 0m\n    reservations: []\n",
       "s.yaml:3:19: reservations: must be a mapping"},
      {"timeline:\n  - at: 0m\n    reserve: {id: r, start: 1h, duration: 1h, "
       "resorces: {agents: 1}}\n",
       "s.yaml:3:47: reserve.resorces: unknown key"},
      {"timeline:\n  - at: 0m\n    reserve: {id: r, start: later, "
       "duration: 1h}\n",
       "s.yaml:3:29: reserve.start: must be an offset from the scenario start "
       "such as 1h30m, or a UTC time like 2026-01-26T15:00:00Z"},
      {"timeline:\n  - at: 0m\n    reserve: {start: 1h, start_time: "
       "\"+1h\", duration: 1h}\n",
       "s.yaml:3:38: reserve: give start (an offset from the scenario start) "
       "or start_time, not both"},
      {"timeline:\n  - at: 0m\n    reserve: {id: [r], start: 1h}\n",
       "s.yaml:3:19: reserve.id: must be a name"},
      {"timeline:\n  - at: 0m\n    reserve: {id: r, start: 1h, duration: 1h, "
       "recurrence: daily, until: never}\n",
       "s.yaml:3:73: reserve.until: must be an offset"},
      {"timeline:\n  - at: 0m\n    cancel_reservation: ghost\n",
       "s.yaml:3:25: cancel_reservation: no reservation with id \"ghost\" was "
       "made earlier in this scenario"},
      {"timeline:\n  - at: 0m\n    cancel_reservation: {id: r, why: x}\n",
       "s.yaml:3:33: cancel_reservation.why: unknown key"},
      {"timeline:\n  - at: 0m\n    cancel_reservation: {by: ceo}\n",
       "s.yaml:3:25: cancel_reservation: give the reservation's scenario id"},
      {"timeline:\n  - at: 0m\n    allocate: {id: a, reservation: ghost}\n",
       "s.yaml:3:36: allocate.reservation: no reservation with id \"ghost\""},
      {"timeline:\n  - at: 0m\n    expect: {conflicts: 1}\n",
       "s.yaml:3:25: expect.conflicts: must be a mapping {open, advisory, "
       "resolved}"},
      {"timeline:\n  - at: 0m\n    expect: {conflicts: {opened: 1}}\n",
       "s.yaml:3:26: expect.conflicts.opened: unknown key"},
      {"timeline:\n  - at: 0m\n    expect: {conflicts: {open: -1}}\n",
       "s.yaml:3:26: expect: conflicts.open must be a whole number >= 0"},
      {"timeline:\n  - at: 0m\n    allocate: {id: a}\n  - at: 0m\n"
       "    expect: {id: a, warnings: some}\n",
       "s.yaml:5:31: expect.warnings: must be a whole number >= 0"},
  };
  for (const Case& c : cases) {
    std::ostringstream out;
    const Status s =
        sim::RunScenarioString(std::string(kRoot) + c.yaml, "s.yaml", ".", out);
    // kRoot adds two lines before the cases' text.
    std::string expect = c.expect;
    const size_t line_at = expect.find(':') + 1;
    const size_t line_end = expect.find(':', line_at);
    if (line_end != std::string::npos) {
      const int line = std::stoi(expect.substr(line_at, line_end - line_at));
      expect.replace(line_at, line_end - line_at, std::to_string(line + 2));
    }
    EXPECT_EQ(s.code(), Code::kInvalidRequest) << c.yaml << s.ToString();
    EXPECT_EQ(s.message().rfind(expect, 0), 0u)
        << c.yaml << "\n  got: " << s.message() << "\n want: " << expect;
  }
}

TEST(SimConflictsTest, RefusedRequestsArePrintedAndTheRunGoesOn) {
  const SimRun r = RunYaml(
      std::string(kRoot) +
      "timeline:\n"
      "  - at: 0m\n"
      "    prevent_conflicts: {policy_type: file_locking, scope: global, "
      "enforcement: lax, by: ceo}\n"
      "  - at: 0m\n"
      "    prevent_conflicts: {scope: web, enforcement: advisory}\n"
      "  - at: 1m\n"
      "    resolve_conflict: {conflict: conf_1, strategy: preempt}\n"
      "  - at: 1m\n"
      "    allocate: {id: a, run_for: 10m}\n"
      "  - at: 2m\n"
      "    resolve_conflict: {waiter: a, strategy: priority_based}\n"
      "  - at: 3m\n"
      "    reserve: {id: r, start: 1h, resources: {agents: 1}}\n"
      "  - at: 4m\n"
      "    check_conflicts: {request: {exclusive_access: [src/a.ts, 7]}}\n"
      "  - at: 5m\n"
      "    expect: {id: a, status: active}\n");
  ASSERT_TRUE(r.status.ok()) << r.status.ToString() << "\n" << r.text;

  const auto prevent = FindAll(r.lines, "op", "prevent_conflicts");
  ASSERT_EQ(prevent.size(), 2u) << r.text;
  EXPECT_EQ((*prevent[0])["error"]["code"], "INVALID_REQUEST");
  EXPECT_EQ((*prevent[0])["error"]["message"],
            "enforcement must be strict, advisory or inherit, got \"lax\"");
  EXPECT_EQ((*prevent[1])["error"]["message"],
            "policy_type is required: file_locking");

  const auto resolve = FindAll(r.lines, "op", "resolve_conflict");
  ASSERT_EQ(resolve.size(), 2u) << r.text;
  EXPECT_EQ((*resolve[0])["error"]["code"], "INVALID_REQUEST");
  EXPECT_EQ((*resolve[0])["error"]["message"],
            "strategy must be priority_based, queue_and_serialize or "
            "force_release, got \"preempt\"");
  EXPECT_EQ((*resolve[1])["id"], "a");
  EXPECT_EQ((*resolve[1])["error"]["code"], "NOT_FOUND");
  EXPECT_EQ((*resolve[1])["error"]["message"],
            "no open conflict holds back a (alloc_1)");

  const Json* reserve = Find(r.lines, "op", "reserve");
  ASSERT_NE(reserve, nullptr) << r.text;
  EXPECT_EQ((*reserve)["id"], "r");
  EXPECT_EQ((*reserve)["error"]["message"],
            "duration is required: how long the window lasts (\"2h\" or "
            "seconds)");

  const Json* check = Find(r.lines, "op", "check_conflicts");
  ASSERT_NE(check, nullptr) << r.text;
  EXPECT_EQ((*check)["error"]["message"],
            "exclusive_access[1] must be a string, got a number");

  EXPECT_NE(Find(r.lines, "expect", "ok"), nullptr) << r.text;
}

TEST(SimConflictsTest, ListsPrintEvenWhenEmpty) {
  const SimRun r = RunYaml(std::string(kRoot) +
                           "timeline:\n"
                           "  - at: 0m\n"
                           "    conflicts: {}\n"
                           "  - at: 0m\n"
                           "    reservations: {}\n"
                           "  - at: 0m\n"
                           "    expect: {conflicts: {open: 0, advisory: 0, "
                           "resolved: 0}}\n");
  ASSERT_TRUE(r.status.ok()) << r.status.ToString() << "\n" << r.text;
  ASSERT_GE(r.lines.size(), 3u) << r.text;
  EXPECT_EQ(r.lines[0], Json::parse(R"j({"t":"0s","conflicts":[]})j"));
  EXPECT_EQ(r.lines[1], Json::parse(R"j({"t":"0s","reservations":[]})j"));
  EXPECT_EQ(r.lines[2], Json::parse(R"j({"t":"0s","expect":"ok",
      "conflicts":{"open":0,"advisory":0,"resolved":0}})j"));
}

TEST(SimConflictsTest, FailedConflictExpectationStopsWithConflict) {
  const SimRun r = RunYaml(std::string(kRoot) +
                           "timeline:\n"
                           "  - at: 0m\n"
                           "    expect: {conflicts: {open: 2}}\n");
  EXPECT_EQ(r.status.code(), Code::kConflict);
  EXPECT_EQ(r.status.message(),
            "s.yaml:5:26: expect: conflicts.open is 0 at 0s, expected 2");
}

// The request forms of check_conflicts reach the engine with the same
// fields: seed 000's proposed_allocation with `files`, and an allocate spec.
TEST(SimConflictsTest, CheckConflictsPrintsTheReport) {
  const SimRun r = RunYaml(
      std::string(kRoot) +
      "timeline:\n"
      "  - at: 0m\n"
      "    check_conflicts:\n"
      "      proposed_allocation: {workflow_id: workflow_789, resources: "
      "{agents: 1}, files: [home.nix, flake.nix]}\n"
      "      check_future: true\n"
      "      time_horizon: \"4h\"\n"
      "  - at: 0m\n"
      "    check_conflicts: {request: {id: x, exclusive_access: [src/]}}\n");
  ASSERT_TRUE(r.status.ok()) << r.status.ToString() << "\n" << r.text;
  const auto checks = FindAll(r.lines, "op", "check_conflicts");
  ASSERT_EQ(checks.size(), 2u) << r.text;
  for (const Json* check : checks) {
    if (check->contains("error")) {
      // The engine may not answer yet; the line still has the op's shape.
      EXPECT_TRUE((*check)["error"].contains("code")) << check->dump();
      continue;
    }
    const Json& result = (*check)["result"];
    EXPECT_TRUE(result.contains("outcome")) << check->dump();
    EXPECT_TRUE(result["conflicts"].is_array()) << check->dump();
    EXPECT_EQ(result["conflicts_found"], result["conflicts"].size());
  }
  if (!checks[0]->contains("error")) {
    EXPECT_EQ((*checks[0])["result"]["horizon"], "4h");
  }
  if (!checks[1]->contains("error")) {
    EXPECT_EQ((*checks[1])["result"]["horizon"], "0s");
  }
}

}  // namespace
}  // namespace qm
