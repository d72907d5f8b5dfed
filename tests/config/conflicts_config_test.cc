// Tests of the conflict-prevention keys of the configuration: conflicts
// (workspace root, strategy, history, file-locking policies) and
// reservations, seed 000's conflict_resolution alias, the dump, and every
// error with file:line:column and key path.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "config/yaml_config.h"
#include "qm/config.h"
#include "qm/config_loader.h"
#include "qm/status.h"
#include "tests/config/config_test_util.h"

namespace qm {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using ::testing::HasSubstr;
using ::testing::StartsWith;

using testing_util::Load;
using testing_util::LoadError;

// The two sections as the design writes them, every key set.
constexpr char kConflicts[] = R"(conflicts:
  workspace_root: /work/repo/
  strategy: priority_based
  history_limit: 50
  file_locking:
    enforcement: advisory
    exceptions: [read_only_operations]
    per_product:
      web: {enforcement: strict, exceptions: []}
      mobile: {enforcement: advisory}
reservations:
  horizon: 7d
  grace_period: 5m
  preempt_running: true
  max_reservations: 20
)";

TEST(ConflictsConfigTest, Defaults) {
  const Config c = Load("");
  EXPECT_EQ(c.conflicts.workspace_root, "");
  EXPECT_EQ(c.conflicts.strategy, ConflictStrategy::kQueueAndSerialize);
  EXPECT_EQ(c.conflicts.history_limit, 1000);
  EXPECT_EQ(c.conflicts.file_locking.enforcement, LockEnforcement::kStrict);
  EXPECT_TRUE(c.conflicts.file_locking.exceptions.empty());
  EXPECT_TRUE(c.conflicts.per_product.empty());
  EXPECT_EQ(c.reservations.horizon, hours(24 * 30));
  EXPECT_EQ(c.reservations.grace_period, minutes(15));
  EXPECT_FALSE(c.reservations.preempt_running);
  EXPECT_EQ(c.reservations.max_reservations, 10000);
  // Empty sections keep the defaults too.
  EXPECT_TRUE(Load("conflicts:\nreservations: {}\n") == Config::Defaults());
}

TEST(ConflictsConfigTest, EveryKeyIsRead) {
  const Config c = Load(kConflicts);
  const ConflictsConfig& conflicts = c.conflicts;
  EXPECT_EQ(conflicts.workspace_root, "/work/repo");
  EXPECT_EQ(conflicts.strategy, ConflictStrategy::kPriorityBased);
  EXPECT_EQ(conflicts.history_limit, 50);
  EXPECT_EQ(conflicts.file_locking,
            (LockPolicy{LockEnforcement::kAdvisory, {"read_only_operations"}}));
  ASSERT_EQ(conflicts.per_product.size(), 2u);
  EXPECT_EQ(conflicts.per_product.at("web"),
            (LockPolicy{LockEnforcement::kStrict, {}}));
  // A product's policy takes the keys it leaves out from the global one.
  EXPECT_EQ(conflicts.per_product.at("mobile"),
            (LockPolicy{LockEnforcement::kAdvisory, {"read_only_operations"}}));

  const ReservationsConfig& reservations = c.reservations;
  EXPECT_EQ(reservations.horizon, hours(24 * 7));
  EXPECT_EQ(reservations.grace_period, minutes(5));
  EXPECT_TRUE(reservations.preempt_running);
  EXPECT_EQ(reservations.max_reservations, 20);
}

TEST(ConflictsConfigTest, ProductPoliciesInheritWhateverTheKeyOrder) {
  // per_product comes before the global keys it inherits.
  const Config c = Load(R"(conflicts:
  file_locking:
    per_product:
      web: {exceptions: [read_only_operations]}
      batch:
    enforcement: advisory
)");
  EXPECT_EQ(c.conflicts.per_product.at("web"),
            (LockPolicy{LockEnforcement::kAdvisory, {"read_only_operations"}}));
  EXPECT_EQ(c.conflicts.per_product.at("batch"),
            (LockPolicy{LockEnforcement::kAdvisory, {}}));
}

TEST(ConflictsConfigTest, ZeroAndBoundaryValues) {
  const Config c = Load(R"(conflicts: {history_limit: 0}
reservations: {grace_period: 0, max_reservations: 1}
)");
  EXPECT_EQ(c.conflicts.history_limit, 0);
  EXPECT_EQ(c.reservations.grace_period, minutes(0));
  EXPECT_EQ(c.reservations.max_reservations, 1);
}

TEST(ConflictsConfigTest, ExceptionsAreKeptOnce) {
  const Config c = Load(
      "conflicts:\n  file_locking:\n    exceptions: [read_only_operations, "
      "read_only_operations]\n");
  EXPECT_EQ(c.conflicts.file_locking.exceptions,
            std::vector<std::string>{"read_only_operations"});
  EXPECT_TRUE(Load("conflicts: {file_locking: {exceptions: null}}")
                  .conflicts.file_locking.exceptions.empty());
}

TEST(ConflictsConfigTest, WorkspaceRootIsNormalisedLexically) {
  struct Case {
    std::string yaml, want;
  } cases[] = {
      {"/work/repo", "/work/repo"},
      {"/work/repo/", "/work/repo"},
      {"/work//repo///", "/work/repo"},
      {"/work/./repo/src/..", "/work/repo"},
      {"/", "/"},
      {"/..", "/"},
      {"\"\"", ""},
      {"null", ""},
      {"", ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.yaml);
    EXPECT_EQ(Load("conflicts:\n  workspace_root: " + c.yaml + "\n")
                  .conflicts.workspace_root,
              c.want);
  }
}

TEST(ConflictsConfigTest, RelativeRootNeedsAConfigFile) {
  EXPECT_EQ(LoadError("conflicts:\n  workspace_root: repo\n"),
            "limits.yml:2:3: conflicts.workspace_root: is a relative path, "
            "but this configuration has no file whose directory it could be "
            "relative to; give an absolute path, got \"repo\"");
  EXPECT_THAT(LoadError("conflicts:\n  workspace_root: ~/repo\n"),
              StartsWith("limits.yml:2:3: conflicts.workspace_root: \"~\" is "
                         "not expanded"));
}

TEST(ConflictsConfigTest, RelativeRootIsRelativeToTheFilesDirectory) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(::testing::TempDir()) / "qm-conflicts-config";
  fs::create_directories(dir / "conf");
  const std::string path = (dir / "conf" / "limits.yml").string();
  {
    std::ofstream f(path);
    f << "conflicts:\n  workspace_root: ../repo/\n";
  }
  StatusOr<Config> c = LoadConfigFile(path);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->conflicts.workspace_root,
            (fs::absolute(dir) / "repo").lexically_normal().string());
  {
    std::ofstream f(path);
    f << "conflicts:\n  workspace_root: .\n";
  }
  c = LoadConfigFile(path);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->conflicts.workspace_root,
            (fs::absolute(dir) / "conf").lexically_normal().string());
  fs::remove_all(dir);
}

TEST(ConflictsConfigTest, EmbeddedConfigResolvesAgainstTheGivenDirectory) {
  const std::string scenario =
      "name: x\nconfig:\n  conflicts: {workspace_root: ws/a/..}\n";
  const YAML::Node doc = YAML::Load(scenario);
  StatusOr<Config> c =
      ConfigFromYamlNode(doc["config"], "s.yaml", scenario, "/scenarios");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->conflicts.workspace_root, "/scenarios/ws");
  StatusOr<Config> without = ConfigFromYamlNode(doc["config"], "s.yaml");
  ASSERT_FALSE(without.ok());
  EXPECT_THAT(without.status().message(),
              StartsWith("s.yaml:3:15: conflicts.workspace_root: is a "
                         "relative path"));
}

TEST(ConflictsConfigTest, SeedConflictResolutionSetsTheStrategy) {
  EXPECT_EQ(Load("conflict_resolution:\n  file_conflicts:\n    strategy: "
                 "priority_based\n")
                .conflicts.strategy,
            ConflictStrategy::kPriorityBased);
  EXPECT_EQ(Load("conflict_resolution: {file_conflicts: {strategy: "
                 "queue_and_serialize}}\n")
                .conflicts.strategy,
            ConflictStrategy::kQueueAndSerialize);
  // Both places agreeing is fine, in either order.
  EXPECT_EQ(Load("conflict_resolution: {file_conflicts: {strategy: "
                 "priority_based}}\nconflicts: {strategy: priority_based}\n")
                .conflicts.strategy,
            ConflictStrategy::kPriorityBased);
}

TEST(ConflictsConfigTest, RoundTrip) {
  for (const char* yaml : {"", kConflicts}) {
    const Config c = Load(yaml);
    const std::string dump = ConfigToYaml(c);
    SCOPED_TRACE(dump);
    StatusOr<Config> again = LoadConfigString(dump, "dump.yml");
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_TRUE(*again == c);
    EXPECT_EQ(ConfigToYaml(*again), dump);
  }
}

// Roots and product names that YAML would read as something else unless
// quoted survive the dump.
TEST(ConflictsConfigTest, RoundTripQuotesWhatNeedsIt) {
  Config c = Config::Defaults();
  c.conflicts.workspace_root = "/work/a: b #c";
  c.conflicts.per_product["true"] = LockPolicy{LockEnforcement::kAdvisory, {}};
  c.conflicts.per_product["007"] = LockPolicy{};
  const std::string dump = ConfigToYaml(c);
  SCOPED_TRACE(dump);
  StatusOr<Config> again = LoadConfigString(dump, "dump.yml");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(*again == c);
}

TEST(ConflictsConfigTest, DumpUsesTheDocumentedKeys) {
  const std::string defaults = ConfigToYaml(Config::Defaults());
  for (const char* key :
       {"conflicts:", "workspace_root: \"\"", "strategy: queue_and_serialize",
        "history_limit: 1000", "file_locking:", "enforcement: strict",
        "exceptions: []", "per_product: {}", "reservations:", "horizon: 30d",
        "grace_period: 15m", "preempt_running: false",
        "max_reservations: 10000"}) {
    EXPECT_THAT(defaults, HasSubstr(key));
  }
  EXPECT_THAT(defaults, ::testing::Not(HasSubstr("conflict_resolution")));
  const std::string set = ConfigToYaml(Load(kConflicts));
  for (const char* key :
       {"workspace_root: /work/repo", "strategy: priority_based",
        "web: {enforcement: strict, exceptions: []}",
        "mobile: {enforcement: advisory, exceptions: [read_only_operations]}",
        "horizon: 7d", "preempt_running: true"}) {
    EXPECT_THAT(set, HasSubstr(key)) << set;
  }
}

// ---- Errors: position, key path and reason. ----

TEST(ConflictsConfigErrorTest, WorkspaceRoot) {
  EXPECT_EQ(LoadError("conflicts:\n  workspace_root: [a]\n"),
            "limits.yml:2:3: conflicts.workspace_root: must be a string, got "
            "a list");
  EXPECT_EQ(LoadError("conflicts:\n  workspace_root: \"/a\\0b\"\n"),
            "limits.yml:2:3: conflicts.workspace_root: must not contain a NUL "
            "byte");
  EXPECT_EQ(LoadError("conflicts:\n  workspace_root: /" +
                      std::string(4096, 'a') + "\n"),
            "limits.yml:2:3: conflicts.workspace_root: must be at most 4096 "
            "bytes long, got 4097");
}

TEST(ConflictsConfigErrorTest, Strategy) {
  EXPECT_EQ(LoadError("conflicts:\n  strategy: priority\n"),
            "limits.yml:2:3: conflicts.strategy: must be queue_and_serialize "
            "or priority_based, got \"priority\", did you mean "
            "\"priority_based\"?");
  EXPECT_EQ(LoadError("conflicts:\n  strategy: [priority_based]\n"),
            "limits.yml:2:3: conflicts.strategy: must be queue_and_serialize "
            "or priority_based, got a list");
}

TEST(ConflictsConfigErrorTest, HistoryLimit) {
  EXPECT_EQ(LoadError("conflicts:\n  history_limit: -1\n"),
            "limits.yml:2:3: conflicts.history_limit: must be a whole number "
            ">= 0, got \"-1\"");
  EXPECT_EQ(LoadError("conflicts:\n  history_limit: \"10\"\n"),
            "limits.yml:2:3: conflicts.history_limit: must be a whole number "
            ">= 0, got the quoted string \"10\" (write numbers without "
            "quotes)");
}

TEST(ConflictsConfigErrorTest, FileLocking) {
  EXPECT_EQ(LoadError("conflicts:\n  file_locking:\n    enforcement: strikt\n"),
            "limits.yml:3:5: conflicts.file_locking.enforcement: must be "
            "strict or advisory, got \"strikt\", did you mean \"strict\"?");
  EXPECT_EQ(
      LoadError("conflicts:\n  file_locking:\n    exceptions: [read_only]\n"),
      "limits.yml:3:18: conflicts.file_locking.exceptions[0]: unknown "
      "exception \"read_only\", did you mean \"read_only_operations\"? (the "
      "one exception known is read_only_operations)");
  EXPECT_EQ(LoadError("conflicts:\n  file_locking:\n    exceptions: "
                      "[read_only_operations, writes]\n"),
            "limits.yml:3:40: conflicts.file_locking.exceptions[1]: unknown "
            "exception \"writes\" (the one exception known is "
            "read_only_operations)");
  EXPECT_EQ(LoadError("conflicts:\n  file_locking:\n    exceptions: "
                      "read_only_operations\n"),
            "limits.yml:3:5: conflicts.file_locking.exceptions: must be a "
            "list, got \"read_only_operations\"");
  EXPECT_EQ(LoadError("conflicts:\n  file_locking:\n    exceptions: [[a]]\n"),
            "limits.yml:3:18: conflicts.file_locking.exceptions[0]: must be a "
            "non-empty string, got a list");
  EXPECT_EQ(LoadError("conflicts:\n  file_locking: strict\n"),
            "limits.yml:2:3: conflicts.file_locking: must be a mapping of "
            "keys to values, got \"strict\"");
  EXPECT_EQ(LoadError("conflicts:\n  file_locking:\n    enforcment: strict\n"),
            "limits.yml:3:5: conflicts.file_locking.enforcment: unknown key, "
            "did you mean \"enforcement\"?");
}

TEST(ConflictsConfigErrorTest, PerProduct) {
  EXPECT_EQ(LoadError("conflicts:\n  file_locking:\n    per_product:\n"
                      "      web: {enforcement: lax}\n"),
            "limits.yml:4:13: conflicts.file_locking.per_product.web."
            "enforcement: must be strict or advisory, got \"lax\"");
  EXPECT_EQ(LoadError("conflicts:\n  file_locking:\n    per_product:\n"
                      "      web: {per_product: {}}\n"),
            "limits.yml:4:13: conflicts.file_locking.per_product.web."
            "per_product: unknown key here, did you mean "
            "\"conflicts.file_locking.per_product\"?");
  EXPECT_EQ(LoadError("conflicts:\n  file_locking:\n    per_product:\n"
                      "      web: advisory\n"),
            "limits.yml:4:7: conflicts.file_locking.per_product.web: must be "
            "a mapping of keys to values, got \"advisory\"");
  EXPECT_EQ(LoadError("conflicts:\n  file_locking:\n    per_product:\n"
                      "      web: {}\n      web: {}\n"),
            "limits.yml:5:7: conflicts.file_locking.per_product.web: "
            "duplicate key, first given at line 4, column 7");
}

TEST(ConflictsConfigErrorTest, Reservations) {
  EXPECT_EQ(LoadError("reservations:\n  horizon: 0\n"),
            "limits.yml:2:3: reservations.horizon: must be longer than 0s, "
            "got \"0\"");
  EXPECT_THAT(LoadError("reservations:\n  horizon: soon\n"),
              StartsWith("limits.yml:2:3: reservations.horizon: must be a "
                         "duration such as"));
  EXPECT_THAT(LoadError("reservations:\n  grace_period: -5m\n"),
              StartsWith("limits.yml:2:3: reservations.grace_period: must be "
                         "a duration such as"));
  EXPECT_EQ(LoadError("reservations:\n  preempt_running: yes\n"),
            "limits.yml:2:3: reservations.preempt_running: must be true or "
            "false, got \"yes\"");
  EXPECT_EQ(LoadError("reservations:\n  max_reservations: 0\n"),
            "limits.yml:2:3: reservations.max_reservations: must be a whole "
            "number >= 1, got \"0\"");
  EXPECT_EQ(LoadError("reservations:\n  horizn: 1d\n"),
            "limits.yml:2:3: reservations.horizn: unknown key, did you mean "
            "\"horizon\"?");
  EXPECT_EQ(LoadError("reservation:\n  horizon: 1d\n"),
            "limits.yml:1:1: reservation: unknown key, did you mean "
            "\"reservations\"?");
}

TEST(ConflictsConfigErrorTest, UnknownKeys) {
  EXPECT_EQ(LoadError("conflicts:\n  file_lock: {}\n"),
            "limits.yml:2:3: conflicts.file_lock: unknown key, did you mean "
            "\"file_locking\"?");
  EXPECT_EQ(LoadError("conflicts:\n  horizon: 1d\n"),
            "limits.yml:2:3: conflicts.horizon: unknown key here, did you "
            "mean \"reservations.horizon\"?");
  EXPECT_EQ(LoadError("file_locking: {enforcement: strict}\n"),
            "limits.yml:1:1: file_locking: unknown key here, did you mean "
            "\"conflicts.file_locking\"?");
}

TEST(ConflictsConfigErrorTest, SeedConflictResolution) {
  EXPECT_EQ(
      LoadError("conflict_resolution:\n  file_conflicts:\n    strategy: "
                "intelligent_queuing\n"),
      "limits.yml:3:5: conflict_resolution.file_conflicts.strategy: must be "
      "queue_and_serialize or priority_based, got \"intelligent_queuing\" "
      "(seed 000's strategy for resource and workflow conflicts; it does not "
      "apply to file locks)");
  EXPECT_EQ(LoadError("conflict_resolution:\n  file_conflicts:\n    "
                      "strategy: merge\n"),
            "limits.yml:3:5: conflict_resolution.file_conflicts.strategy: "
            "must be queue_and_serialize or priority_based, got \"merge\"");
  EXPECT_EQ(LoadError("conflict_resolution:\n  file_conflicts:\n    "
                      "timeout: 10m\n"),
            "limits.yml:3:5: conflict_resolution.file_conflicts.timeout: is "
            "not supported: only strategy is read here (another name for "
            "conflicts.strategy)");
  EXPECT_THAT(LoadError("conflict_resolution:\n  resource_conflicts:\n    "
                        "strategy: intelligent_queuing\n"),
              StartsWith("limits.yml:2:3: conflict_resolution.resource_"
                         "conflicts: is not supported"));
  EXPECT_THAT(LoadError("conflict_resolution:\n  workflow_conflicts: {}\n"),
              StartsWith("limits.yml:2:3: conflict_resolution.workflow_"
                         "conflicts: is not supported: list the workflows"));
  // The alias and the key itself must agree.
  EXPECT_EQ(LoadError("conflicts:\n  strategy: queue_and_serialize\n"
                      "conflict_resolution:\n  file_conflicts: {strategy: "
                      "priority_based}\n"),
            "limits.yml:4:20: conflict_resolution.file_conflicts.strategy: "
            "priority_based disagrees with conflicts.strategy "
            "(queue_and_serialize, at line 2, column 3); both set the "
            "file-conflict strategy, so give one of them or make them equal");
}

}  // namespace
}  // namespace qm

namespace qm {
namespace {

// The monitoring section (docs/monitoring.md): every key, the dump, and
// thresholds out of range or out of order named with their place.
TEST(MonitoringConfigTest, EveryKeyIsReadAndDumped) {
  const Config c = testing_util::Load(R"(monitoring:
  warning_threshold: 0.7
  critical_threshold: 0.9
  pressure_threshold: 0.75
  gc_trigger_threshold: 0.85
  psi_threshold: 0.2
  hysteresis: 0.1
  degradation:
    threshold: 0.5
    min_increase: 30s
    window: 10m
    baseline: 6h
    min_samples: 3
)");
  EXPECT_EQ(c.monitoring.warning_threshold, 0.7);
  EXPECT_EQ(c.monitoring.critical_threshold, 0.9);
  EXPECT_EQ(c.monitoring.pressure_threshold, 0.75);
  EXPECT_EQ(c.monitoring.gc_trigger_threshold, 0.85);
  EXPECT_EQ(c.monitoring.psi_threshold, 0.2);
  EXPECT_EQ(c.monitoring.hysteresis, 0.1);
  EXPECT_EQ(c.monitoring.degradation.threshold, 0.5);
  EXPECT_EQ(c.monitoring.degradation.min_increase, std::chrono::seconds(30));
  EXPECT_EQ(c.monitoring.degradation.window, std::chrono::minutes(10));
  EXPECT_EQ(c.monitoring.degradation.baseline, std::chrono::hours(6));
  EXPECT_EQ(c.monitoring.degradation.min_samples, 3);
  const std::string yaml = ConfigToYaml(c);
  auto again = LoadConfigString(yaml, "dump.yml");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->monitoring, c.monitoring);
  EXPECT_EQ(Config::Defaults().monitoring, MonitoringConfig{});
}

TEST(MonitoringConfigTest, BadThresholdsAreNamed) {
  using ::testing::HasSubstr;
  EXPECT_THAT(
      testing_util::LoadError("monitoring:\n  warning_threshold: 1.5\n"),
      HasSubstr("monitoring.warning_threshold"));
  EXPECT_THAT(testing_util::LoadError("monitoring:\n  psi_threshold: 0\n"),
              HasSubstr("monitoring.psi_threshold"));
  EXPECT_THAT(testing_util::LoadError("monitoring:\n  hysteresis: 0.6\n"),
              HasSubstr("monitoring.hysteresis"));
  EXPECT_THAT(
      testing_util::LoadError("monitoring:\n  critical_threshold: 0.5\n"),
      HasSubstr("critical_threshold: 0.5 must not be below "
                "warning_threshold (0.8)"));
  EXPECT_THAT(
      testing_util::LoadError("monitoring:\n  gc_trigger_threshold: 0.7\n"),
      HasSubstr("gc_trigger_threshold: 0.7 must not be below "
                "pressure_threshold (0.8)"));
  EXPECT_THAT(testing_util::LoadError("monitoring:\n  psi_threshold: 0.05\n"),
              HasSubstr("hysteresis: 0.05 must be below psi_threshold (0.05)"));
  EXPECT_THAT(testing_util::LoadError("monitoring:\n  warning: 0.5\n"),
              HasSubstr("warning_threshold"));  // did you mean
  EXPECT_THAT(testing_util::LoadError(
                  "monitoring:\n  degradation:\n    threshold: 0\n"),
              HasSubstr("monitoring.degradation.threshold"));
  EXPECT_THAT(
      testing_util::LoadError("monitoring:\n  degradation:\n    window: 30s\n"),
      HasSubstr("degradation.window: must be at least 1m, got 30s"));
  EXPECT_THAT(testing_util::LoadError("monitoring:\n  degradation:\n    "
                                      "window: 2h\n    baseline: 1h\n"),
              HasSubstr("degradation.baseline: must be from the window (2h) "
                        "to 7d, got 1h"));
  EXPECT_THAT(testing_util::LoadError(
                  "monitoring:\n  degradation:\n    min_samples: 0\n"),
              HasSubstr("monitoring.degradation.min_samples"));
  EXPECT_THAT(testing_util::LoadError(
                  "monitoring:\n  degradation:\n    treshold: 0.3\n"),
              HasSubstr("threshold"));  // did you mean
}

}  // namespace
}  // namespace qm
