// Tests of ConfigFromYamlNode, the entry point for a config embedded in a
// larger YAML document (the simulator's scenario files).
#include "config/yaml_config.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <string>

#include "qm/config.h"
#include "qm/status.h"

namespace qm {
namespace {

constexpr char kScenario[] = R"(name: two backends
steps:
  - at: 0s
    request: {agent_type: backend-engineer}
config:
  max_concurrent:
    total: 3
    per_type:
      backend-engineer: 1
)";

TEST(ConfigFromYamlNodeTest, ReadsAnEmbeddedMapping) {
  const YAML::Node scenario = YAML::Load(kScenario);
  StatusOr<Config> config =
      ConfigFromYamlNode(scenario["config"], "scenario.yaml");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->FindResource("agents")->capacity, 3);
  EXPECT_EQ(config->per_type_limits.at("backend-engineer"), 1);
}

TEST(ConfigFromYamlNodeTest, ErrorsPointIntoTheEnclosingDocument) {
  YAML::Node scenario = YAML::Load(R"(name: bad limits
config:
  scheduling:
    default_ttl: soon
)");
  StatusOr<Config> config =
      ConfigFromYamlNode(scenario["config"], "scenario.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), Code::kInvalidRequest);
  // Line 4 of the scenario; the path is relative to the config mapping.
  EXPECT_EQ(config.status().message(),
            "scenario.yaml:4:5: scheduling.default_ttl: must be a duration "
            "such as \"30s\", \"5m\", \"1h30m\", \"250ms\", \"1d\" or a whole "
            "number of seconds, got \"soon\"");
}

TEST(ConfigFromYamlNodeTest, AbsentOrNullGivesDefaults) {
  const YAML::Node scenario = YAML::Load("name: x\nconfig:\n");
  for (const YAML::Node& node :
       {YAML::Node(scenario["config"]), YAML::Node(scenario["missing"])}) {
    StatusOr<Config> config = ConfigFromYamlNode(node, "scenario.yaml");
    ASSERT_TRUE(config.ok()) << config.status().ToString();
    EXPECT_EQ(config->resources.size(), Config::Defaults().resources.size());
  }
}

TEST(ConfigFromYamlNodeTest, DoesNotModifyTheDocument) {
  const YAML::Node scenario = YAML::Load(kScenario);
  const std::string before = YAML::Dump(scenario);
  ASSERT_TRUE(ConfigFromYamlNode(scenario["config"], "scenario.yaml").ok());
  EXPECT_EQ(YAML::Dump(scenario), before);
}

TEST(ConfigFromYamlNodeTest, NonMappingIsAnError) {
  const YAML::Node scenario = YAML::Load("config: [1, 2]\n");
  StatusOr<Config> config =
      ConfigFromYamlNode(scenario["config"], "scenario.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(),
            "scenario.yaml:1:9: the configuration must be a mapping of keys "
            "to values, got a list");
}

}  // namespace
}  // namespace qm
