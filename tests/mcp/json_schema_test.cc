// The JSON Schema subset validator the tools check their arguments with,
// and the text renderings of resource_monitor (no server needed).
#include "mcp/json_schema.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "mcp/tools.h"

namespace qm::mcp {
namespace {

using Json = nlohmann::json;

std::string Check(const char* schema, const Json& value) {
  Status s = ValidateJson(Json::parse(schema), value, "arguments");
  return s.ok() ? "ok" : s.message();
}

TEST(JsonSchemaTest, Types) {
  EXPECT_EQ(Check(R"({"type": "integer"})", 3), "ok");
  EXPECT_EQ(Check(R"({"type": "integer"})", 3.0), "ok");
  EXPECT_EQ(Check(R"({"type": "integer"})", 3.5),
            "arguments: must be an integer, not number");
  EXPECT_EQ(Check(R"({"type": "number"})", "3"),
            "arguments: must be a number, not string");
  EXPECT_EQ(Check(R"({"type": ["string", "null"]})", nullptr), "ok");
  EXPECT_EQ(Check(R"({"type": ["string", "null"]})", 1),
            "arguments: must be a string or null, not number");
  EXPECT_EQ(Check(R"({"type": "boolean"})", 0),
            "arguments: must be true or false, not number");
  EXPECT_EQ(Check(R"({})", Json::array()), "ok");
}

TEST(JsonSchemaTest, ObjectsAndArrays) {
  const char* s = R"({
    "type": "object", "additionalProperties": false, "required": ["a"],
    "properties": {
      "a": {"type": "string", "minLength": 1},
      "b": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
      "c": {"type": "object", "additionalProperties": {"type": "number", "exclusiveMinimum": 0}}
    }
  })";
  EXPECT_EQ(Check(s, Json{{"a", "x"}, {"b", {1, 2}}, {"c", {{"k", 1}}}}), "ok");
  EXPECT_EQ(Check(s, Json::object()), "arguments.a: required");
  EXPECT_EQ(Check(s, Json{{"a", ""}}), "arguments.a: must not be empty");
  EXPECT_EQ(Check(s, Json{{"a", "x"}, {"z", 1}}),
            "arguments.z: unknown field (known fields: a, b, c)");
  EXPECT_EQ(Check(s, Json{{"a", "x"}, {"b", Json::array()}}),
            "arguments.b: must have at least 1 items");
  EXPECT_EQ(Check(s, Json{{"a", "x"}, {"b", {1, -2}}}),
            "arguments.b[1]: must be at least 0");
  EXPECT_EQ(Check(s, Json{{"a", "x"}, {"c", {{"k", 0}}}}),
            "arguments.c.k: must be greater than 0");
  EXPECT_EQ(Check(s, Json::array()), "arguments: must be an object, not array");
}

TEST(JsonSchemaTest, EnumsAndAlternatives) {
  const char* priority = R"({"oneOf": [
    {"type": "string", "enum": ["critical", "high", "normal", "low"]},
    {"type": "integer", "minimum": 0, "maximum": 100}]})";
  EXPECT_EQ(Check(priority, "high"), "ok");
  EXPECT_EQ(Check(priority, 55), "ok");
  EXPECT_EQ(Check(priority, "urgent"),
            "arguments: must be one of \"critical\", \"high\", \"normal\", "
            "\"low\", or an integer from 0 to 100");
  EXPECT_EQ(Check(priority, 101), Check(priority, "urgent"));
  const char* either = R"({"type": "object",
    "anyOf": [{"required": ["workflow_id"]}, {"required": ["product"]}]})";
  EXPECT_EQ(Check(either, Json{{"product", "p"}}), "ok");
  EXPECT_EQ(Check(either, Json::object()),
            "arguments: give workflow_id or product");
}

TEST(JsonSchemaTest, UnknownKeywordsAreReported) {
  std::string bad;
  EXPECT_TRUE(SchemaKeywordsSupported(
      Json::parse(R"({"type": "object", "properties": {"a": {"type": "string",
                     "description": "x"}}})"),
      &bad));
  EXPECT_FALSE(SchemaKeywordsSupported(
      Json::parse(R"({"properties": {"a": {"pattern": "^x"}}})"), &bad));
  EXPECT_EQ(bad, "properties.a.pattern");
  for (const Tool& t : Tools()) {
    EXPECT_TRUE(SchemaKeywordsSupported(t.input_schema, &bad))
        << t.name << ": " << bad;
    EXPECT_TRUE(SchemaKeywordsSupported(t.output_schema, &bad))
        << t.name << ": " << bad;
    EXPECT_TRUE(t.input_schema.is_object() && t.output_schema.is_object())
        << t.name;
  }
}

TEST(RenderTest, DashboardShowsOnlyTheGivenFigures) {
  Json status = Json::parse(R"({
    "time": "2026-01-26T14:00:00Z",
    "resources": {"agents": {"total": 5.0, "allocated": 2.0, "reserved": 0.0,
                             "available": 3.0, "utilization_percent": 40.0}},
    "agent_types": {"coder": {"running_agents": 2.0, "limit": 3, "queued": 1}},
    "products": {},
    "allocations": {"active": 2, "queued": 1, "preempting": 0,
                    "oldest_wait": "2m", "queued_by_level": {}}})");
  Json allocations = Json::parse(R"([
    {"allocation_id": "alloc_1", "status": "active", "agent_type": "coder",
     "workflow_id": "w1", "product": "web", "priority": "high",
     "fencing_token": 4, "expires_at": "2026-01-26T14:30:00Z"},
    {"allocation_id": "alloc_3", "status": "queued", "agent_type": "coder",
     "workflow_id": "w2", "priority": "normal",
     "queued_at": "2026-01-26T13:58:00Z", "reason_queued": "coder limit 3"}])");
  const std::string d = RenderDashboard(status, allocations, true);
  EXPECT_NE(d.find("qm at 2026-01-26T14:00:00Z"), std::string::npos) << d;
  EXPECT_NE(d.find("agents"), std::string::npos);
  EXPECT_NE(d.find("2/5"), std::string::npos) << d;
  EXPECT_NE(d.find("40%"), std::string::npos) << d;
  EXPECT_NE(d.find("coder 2 running of 3, 1 queued"), std::string::npos) << d;
  EXPECT_NE(d.find("oldest waiting 2m"), std::string::npos) << d;
  EXPECT_NE(d.find("alloc_1 active coder w1 [web] high token 4 until "
                   "2026-01-26T14:30:00Z"),
            std::string::npos)
      << d;
  EXPECT_NE(d.find("alloc_3 queued coder w2 normal since "
                   "2026-01-26T13:58:00Z: coder limit 3"),
            std::string::npos)
      << d;
  EXPECT_NE(d.find("more match"), std::string::npos);
  EXPECT_NE(RenderDashboard(status, Json::array(), false)
                .find("no allocations match"),
            std::string::npos);
}

TEST(RenderTest, FilterMetricsKeepsTheMatchingSeries) {
  const std::string text =
      "# HELP qm_product_running_agents Running agents.\n"
      "# TYPE qm_product_running_agents gauge\n"
      "qm_product_running_agents{product=\"web\"} 1\n"
      "qm_product_running_agents{product=\"app\"} 2\n"
      "# HELP qm_only_app Only app.\n"
      "# TYPE qm_only_app gauge\n"
      "qm_only_app{product=\"app\"} 2\n"
      "# HELP qm_allocations_active Active.\n"
      "# TYPE qm_allocations_active gauge\n"
      "qm_allocations_active 3\n"
      "qm_x{subproduct=\"app\",agent_type=\"coder\"} 1\n";
  EXPECT_EQ(FilterMetrics(text, "", ""), text);
  EXPECT_EQ(FilterMetrics(text, "web", ""),
            "# HELP qm_product_running_agents Running agents.\n"
            "# TYPE qm_product_running_agents gauge\n"
            "qm_product_running_agents{product=\"web\"} 1\n"
            "# HELP qm_allocations_active Active.\n"
            "# TYPE qm_allocations_active gauge\n"
            "qm_allocations_active 3\n"
            "qm_x{subproduct=\"app\",agent_type=\"coder\"} 1\n");
  EXPECT_EQ(FilterMetrics(text, "", "reviewer").find("qm_x"),
            std::string::npos);
}

}  // namespace
}  // namespace qm::mcp
