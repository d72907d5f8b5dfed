// Tests of the condition language of model-selection rules and breaker trip
// conditions: the seed examples, operators, absent values, compile errors
// with their columns, hostile input.
#include "core/expr.h"

#include <gtest/gtest.h>

#include <optional>
#include <random>
#include <string>
#include <vector>

#include "core/conditions.h"
#include "qm/config.h"

namespace qm {
namespace {

using expr::CompileError;
using expr::Condition;
using expr::Schema;
using expr::Value;

// The values of TaskSchema() for one request.
struct Task {
  std::optional<Level> priority = Level::kNormal;
  std::optional<double> priority_value = 50;
  std::optional<double> minutes;
  std::optional<double> tokens;
  std::optional<std::string> product = "web";
  std::optional<std::string> agent_type = "coder";
  std::optional<std::string> workflow_id = "wf-1";
  std::optional<std::string> requester = "alice";
  std::optional<bool> preemptible = false;

  std::vector<Value> Values() const {
    std::vector<Value> v(kNumTaskVars);
    if (priority) v[kTaskPriority] = *priority;
    if (priority_value) v[kTaskPriorityValue] = *priority_value;
    if (minutes) v[kTaskEstimatedMinutes] = *minutes;
    if (tokens) v[kTaskEstimatedTokens] = *tokens;
    if (product) v[kTaskProduct] = *product;
    if (agent_type) v[kTaskAgentType] = *agent_type;
    if (workflow_id) v[kTaskWorkflowId] = *workflow_id;
    if (requester) v[kTaskRequester] = *requester;
    if (preemptible) v[kTaskPreemptible] = *preemptible;
    return v;
  }
};

// The values of BreakerSchema(); absent unless set.
std::vector<Value> Breaker(std::optional<double> cost,
                           std::optional<double> projected,
                           std::optional<double> max_cost) {
  std::vector<Value> v(kNumBreakerVars);
  if (cost) v[kCostDailyUsd] = *cost;
  if (projected) v[kProjectedCostDailyUsd] = *projected;
  if (max_cost) v[kMaxCostUsd] = *max_cost;
  return v;
}

Condition MustCompile(std::string_view text,
                      const Schema& schema = TaskSchema()) {
  StatusOr<Condition> c = Condition::Compile(text, schema);
  EXPECT_TRUE(c.ok()) << text << ": " << c.status().message();
  return c.ok() ? *c : Condition();
}

bool EvalTask(std::string_view text, const Task& task) {
  return MustCompile(text).Evaluate(task.Values());
}

Task WithPriority(Level level) {
  Task t;
  t.priority = level;
  return t;
}

// The Status message of a condition that must not compile; also checks that
// CompileError agrees with it.
std::string ErrorOf(std::string_view text,
                    const Schema& schema = TaskSchema()) {
  CompileError error;
  StatusOr<Condition> c = Condition::Compile(text, schema, &error);
  if (c.ok()) {
    ADD_FAILURE() << "compiled: " << text;
    return "";
  }
  EXPECT_EQ(c.status().code(), Code::kInvalidRequest);
  EXPECT_EQ(c.status().message(), "column " + std::to_string(error.offset + 1) +
                                      ": " + error.message);
  return c.status().message();
}

// ---- The seed examples ----

TEST(ExprTest, SeedModelSelectionRules) {
  const Condition critical = MustCompile("task.priority == critical");
  EXPECT_TRUE(critical.Evaluate(WithPriority(Level::kCritical).Values()));
  EXPECT_FALSE(critical.Evaluate(WithPriority(Level::kHigh).Values()));
  EXPECT_EQ(critical.variables(), std::vector<size_t>{kTaskPriority});
  EXPECT_FALSE(critical.is_default());
  EXPECT_EQ(critical.text(), "task.priority == critical");

  const Condition quick = MustCompile("task.estimated_minutes < 30");
  Task t;
  t.minutes = 10;
  EXPECT_TRUE(quick.Evaluate(t.Values()));
  t.minutes = 30;
  EXPECT_FALSE(quick.Evaluate(t.Values()));
  t.minutes.reset();
  EXPECT_FALSE(quick.Evaluate(t.Values()));
  EXPECT_EQ(quick.variables(), std::vector<size_t>{kTaskEstimatedMinutes});

  const Condition fallback = MustCompile("default");
  EXPECT_TRUE(fallback.is_default());
  EXPECT_TRUE(fallback.Evaluate(Task().Values()));
  EXPECT_TRUE(fallback.variables().empty());
  EXPECT_TRUE(MustCompile("  default ").is_default());

  const Condition product = MustCompile("task.product == urgent-project");
  t.product = "urgent-project";
  EXPECT_TRUE(product.Evaluate(t.Values()));
  t.product = "urgent";
  EXPECT_FALSE(product.Evaluate(t.Values()));
}

TEST(ExprTest, SeedBreakerConditions) {
  const Condition over = MustCompile(
      "cost_daily_usd > daily_limits.max_cost_usd", BreakerSchema());
  EXPECT_TRUE(over.Evaluate(Breaker(100.01, 0, 100)));
  EXPECT_FALSE(over.Evaluate(Breaker(100, 0, 100)));
  // No limit configured: the condition never trips.
  EXPECT_FALSE(over.Evaluate(Breaker(1e9, 0, std::nullopt)));
  EXPECT_EQ(over.variables(),
            (std::vector<size_t>{kCostDailyUsd, kMaxCostUsd}));

  const Condition projected =
      MustCompile("projected_cost_daily_usd >= 0.9 * daily_limits.max_cost_usd",
                  BreakerSchema());
  EXPECT_TRUE(projected.Evaluate(Breaker(0, 90, 100)));
  EXPECT_TRUE(projected.Evaluate(Breaker(0, 250, 100)));
  EXPECT_FALSE(projected.Evaluate(Breaker(0, 89.9, 100)));
  EXPECT_FALSE(projected.Evaluate(Breaker(0, std::nullopt, 100)));
  EXPECT_FALSE(projected.Evaluate(Breaker(0, 90, std::nullopt)));
  EXPECT_EQ(projected.variables(),
            (std::vector<size_t>{kProjectedCostDailyUsd, kMaxCostUsd}));
}

// ---- Operators ----

TEST(ExprTest, BareWordsAreStrings) {
  Task t;
  t.product = "3d-printing";
  t.agent_type = "1.2.3";
  t.requester = "in";
  EXPECT_TRUE(EvalTask("task.product == 3d-printing", t));
  EXPECT_TRUE(EvalTask("task.product == '3d-printing'", t));
  EXPECT_TRUE(EvalTask("task.agent_type == 1.2.3", t));
  EXPECT_TRUE(EvalTask("task.requester == in", t));
  EXPECT_TRUE(EvalTask("task.requester in [in, not]", t));
  // Quoted strings keep spaces and have no escapes.
  t.product = "a \\ b";
  EXPECT_TRUE(EvalTask("task.product == 'a \\ b'", t));
  // Case matters for strings and the words true and false.
  EXPECT_FALSE(EvalTask("task.requester == IN", t));
  EXPECT_EQ(ErrorOf("task.preemptible == True"),
            "column 18: cannot compare bool with string");
}

TEST(ExprTest, AndOrNotAndParentheses) {
  Task t;
  t.priority = Level::kCritical;
  t.product = "web";
  t.preemptible = true;
  EXPECT_TRUE(EvalTask("task.priority == critical && task.product == web", t));
  EXPECT_FALSE(EvalTask("task.priority == critical && task.product == api", t));
  EXPECT_TRUE(EvalTask("task.priority == low || task.product == web", t));
  EXPECT_FALSE(EvalTask("task.priority == low || task.product == api", t));
  EXPECT_TRUE(EvalTask("task.preemptible", t));
  EXPECT_FALSE(EvalTask("!task.preemptible", t));
  EXPECT_TRUE(EvalTask("!!task.preemptible", t));
  EXPECT_TRUE(EvalTask("task.preemptible == true", t));
  EXPECT_TRUE(EvalTask("task.preemptible != false", t));
  EXPECT_TRUE(EvalTask("true", t));
  EXPECT_FALSE(EvalTask("false", t));
  // "!" applies to the whole comparison.
  EXPECT_FALSE(EvalTask("!task.priority == critical", t));
  EXPECT_TRUE(EvalTask("!task.priority == low", t));
  EXPECT_TRUE(EvalTask("!(task.priority == low)", t));
  // && binds tighter than ||: true || (false && false).
  EXPECT_TRUE(EvalTask(
      "task.preemptible || task.product == api && task.priority == low", t));
  EXPECT_FALSE(EvalTask(
      "(task.preemptible || task.product == api) && task.priority == low", t));
  EXPECT_TRUE(EvalTask("((task.preemptible))", t));
  EXPECT_TRUE(EvalTask(
      "task.product==api||task.product==web&&(task.priority>=high)", t));
  EXPECT_TRUE(
      EvalTask("task.preemptible && task.preemptible && "
               "task.preemptible || false",
               t));
}

TEST(ExprTest, ComparisonOperatorsOnNumbers) {
  Task t;
  t.minutes = 30;
  EXPECT_TRUE(EvalTask("task.estimated_minutes == 30", t));
  EXPECT_FALSE(EvalTask("task.estimated_minutes != 30", t));
  EXPECT_FALSE(EvalTask("task.estimated_minutes < 30", t));
  EXPECT_TRUE(EvalTask("task.estimated_minutes <= 30", t));
  EXPECT_FALSE(EvalTask("task.estimated_minutes > 30", t));
  EXPECT_TRUE(EvalTask("task.estimated_minutes >= 30", t));
  EXPECT_TRUE(EvalTask("30 >= task.estimated_minutes", t));
  EXPECT_TRUE(EvalTask("task.estimated_minutes > -1", t));
  EXPECT_TRUE(EvalTask("task.estimated_minutes == 3e1", t));
  EXPECT_TRUE(EvalTask("task.estimated_minutes == 3.0E+1", t));
  EXPECT_TRUE(EvalTask("task.estimated_minutes > .5", t));
  EXPECT_TRUE(EvalTask("task.estimated_minutes < 1e6", t));
}

TEST(ExprTest, Arithmetic) {
  Task t;
  t.minutes = 10;
  t.tokens = 5000;
  t.priority_value = 40;
  EXPECT_TRUE(
      EvalTask("task.estimated_tokens / task.estimated_minutes > 400", t));
  EXPECT_FALSE(
      EvalTask("task.estimated_tokens / task.estimated_minutes > 500", t));
  // Left to right: 5000 / 10 * 2 = 1000.
  EXPECT_TRUE(EvalTask(
      "task.estimated_tokens / task.estimated_minutes * 2 == 1000", t));
  EXPECT_TRUE(EvalTask("2 * task.priority_value == 80", t));
  EXPECT_TRUE(EvalTask("task.priority_value >= 0.5 * 80", t));
  // Division by a zero value: 5000 / 0 is infinite, 0 / 0 has no value.
  t.minutes = 0;
  EXPECT_TRUE(
      EvalTask("task.estimated_tokens / task.estimated_minutes > 1e300", t));
  t.tokens = 0;
  EXPECT_FALSE(
      EvalTask("task.estimated_tokens / task.estimated_minutes != 1", t));
  // An absent factor makes the product absent.
  t.tokens.reset();
  EXPECT_FALSE(EvalTask("task.estimated_tokens * 2 >= 0", t));
}

TEST(ExprTest, InLists) {
  Task t;
  t.product = "b c";
  EXPECT_TRUE(EvalTask("task.product in [a, \"b c\", 'd']", t));
  EXPECT_FALSE(EvalTask("task.product in [a, d]", t));
  EXPECT_FALSE(EvalTask("task.product !in [a, \"b c\"]", t));
  EXPECT_TRUE(EvalTask("task.product ! in [a, d]", t));
  EXPECT_TRUE(EvalTask("task.product in['b c']", t));

  t.priority = Level::kHigh;
  EXPECT_TRUE(EvalTask("task.priority in [high, critical]", t));
  EXPECT_FALSE(EvalTask("task.priority in [low, medium]", t));
  t.priority = Level::kNormal;
  EXPECT_TRUE(EvalTask("task.priority in [low, medium]", t));

  t.minutes = 15;
  EXPECT_TRUE(EvalTask("task.estimated_minutes in [5, 15, 60]", t));
  EXPECT_TRUE(EvalTask("task.estimated_minutes * 2 in [30]", t));
  EXPECT_FALSE(EvalTask("task.estimated_minutes !in [5, 15]", t));
  t.preemptible = true;
  EXPECT_TRUE(EvalTask("task.preemptible in [true]", t));

  // Absent: both "in" and "!in" are false, their negation true.
  t.minutes.reset();
  EXPECT_FALSE(EvalTask("task.estimated_minutes in [5, 15]", t));
  EXPECT_FALSE(EvalTask("task.estimated_minutes !in [5, 15]", t));
  EXPECT_TRUE(EvalTask("!(task.estimated_minutes in [5, 15])", t));
}

TEST(ExprTest, LevelsAreOrderedLowToCritical) {
  const Condition high = MustCompile("task.priority >= high");
  EXPECT_FALSE(high.Evaluate(WithPriority(Level::kLow).Values()));
  EXPECT_FALSE(high.Evaluate(WithPriority(Level::kNormal).Values()));
  EXPECT_TRUE(high.Evaluate(WithPriority(Level::kHigh).Values()));
  EXPECT_TRUE(high.Evaluate(WithPriority(Level::kCritical).Values()));

  const Condition below = MustCompile("task.priority < normal");
  EXPECT_TRUE(below.Evaluate(WithPriority(Level::kLow).Values()));
  EXPECT_FALSE(below.Evaluate(WithPriority(Level::kNormal).Values()));

  // "medium" names normal; quoted names and a literal on the left work too.
  EXPECT_TRUE(
      EvalTask("task.priority == medium", WithPriority(Level::kNormal)));
  EXPECT_TRUE(EvalTask("task.priority == \"critical\"",
                       WithPriority(Level::kCritical)));
  EXPECT_TRUE(
      EvalTask("high <= task.priority", WithPriority(Level::kCritical)));
  EXPECT_FALSE(
      EvalTask("high > task.priority", WithPriority(Level::kCritical)));
  EXPECT_TRUE(EvalTask("task.priority != low", WithPriority(Level::kNormal)));
}

TEST(ExprTest, AbsentValuesMakeComparisonsFalse) {
  Task t;
  t.priority.reset();
  t.product.reset();
  t.preemptible.reset();
  EXPECT_FALSE(EvalTask("task.priority >= low", t));
  EXPECT_TRUE(EvalTask("!(task.priority >= low)", t));
  EXPECT_FALSE(EvalTask("task.estimated_minutes < 30", t));
  EXPECT_TRUE(EvalTask("!(task.estimated_minutes < 30)", t));
  EXPECT_TRUE(EvalTask("!task.estimated_minutes < 30", t));
  // "!=" is a comparison too.
  EXPECT_FALSE(EvalTask("task.product != web", t));
  EXPECT_FALSE(EvalTask("task.product == web", t));
  EXPECT_FALSE(EvalTask("task.preemptible", t));
  EXPECT_TRUE(EvalTask("!task.preemptible", t));
  EXPECT_TRUE(EvalTask("task.estimated_minutes < 30 || true", t));
}

TEST(ExprTest, WrongValuesEvaluateFalse) {
  const Condition c = MustCompile("!(task.estimated_minutes < 30)");
  EXPECT_TRUE(c.Evaluate(Task().Values()));
  // Too few values.
  EXPECT_FALSE(c.Evaluate({}));
  EXPECT_FALSE(MustCompile("default").Evaluate({}));
  // The wrong type for a variable the condition reads.
  std::vector<Value> v = Task().Values();
  v[kTaskEstimatedMinutes] = std::string("ten");
  EXPECT_FALSE(c.Evaluate(v));
  // A default-constructed Condition matches nothing.
  EXPECT_FALSE(Condition().Evaluate(Task().Values()));
}

TEST(ExprTest, CopiesShareTheTree) {
  Condition copy;
  {
    const Condition original = MustCompile("task.priority >= high");
    copy = original;
  }
  EXPECT_TRUE(copy.Evaluate(WithPriority(Level::kHigh).Values()));
  EXPECT_EQ(copy.text(), "task.priority >= high");
}

// ---- Compile errors ----

TEST(ExprTest, TypeErrorsNameTheColumnOfTheOperator) {
  EXPECT_EQ(ErrorOf("task.estimated_minutes == \"thirty\""),
            "column 24: cannot compare number with string");
  EXPECT_EQ(ErrorOf("task.estimated_minutes < abc"),
            "column 24: cannot compare number with string");
  EXPECT_EQ(ErrorOf("task.estimated_minutes < 30min"),
            "column 26: \"30min\" is not a number");
  EXPECT_EQ(ErrorOf("task.estimated_minutes in [5, 1.2.3]"),
            "column 31: \"1.2.3\" is not a number");
  EXPECT_EQ(ErrorOf("task.priority == 3"),
            "column 15: cannot compare level with number");
  EXPECT_EQ(ErrorOf("task.priority == task.product"),
            "column 15: cannot compare level with string");
  EXPECT_EQ(ErrorOf("task.preemptible == 1"),
            "column 18: cannot compare bool with number");
  EXPECT_EQ(ErrorOf("task.product < zzz"),
            "column 14: \"<\" cannot order strings; they compare only with == "
            "and !=");
  EXPECT_EQ(ErrorOf("task.preemptible >= true"),
            "column 18: \">=\" cannot order bools; they compare only with == "
            "and !=");
  EXPECT_EQ(ErrorOf("task.product * 2 > 1"),
            "column 1: \"*\" and \"/\" need numbers, got \"task.product\", a "
            "string");
  EXPECT_EQ(ErrorOf("task.estimated_minutes * 'x' > 1"),
            "column 26: \"*\" and \"/\" need numbers, got \"'x'\"");
  EXPECT_EQ(ErrorOf("task.product in [a, 3]"),
            "column 21: cannot compare string with number");
  EXPECT_EQ(ErrorOf("task.estimated_minutes in [1, x]"),
            "column 31: cannot compare number with string");
  // A bare operand must be a bool.
  EXPECT_EQ(ErrorOf("task.product"),
            "column 1: \"task.product\" is a string, not a condition; compare "
            "it with ==, !=, <, <=, >, >= or in");
  EXPECT_EQ(ErrorOf("task.preemptible && task.estimated_minutes * 2"),
            "column 21: \"task.estimated_minutes * 2\" is a number, not a "
            "condition; compare it with ==, !=, <, <=, >, >= or in");
  EXPECT_EQ(ErrorOf("\"x\" || true"),
            "column 1: \"\\\"x\\\"\" is a string, not a condition; compare it "
            "with ==, !=, <, <=, >, >= or in");
  EXPECT_EQ(ErrorOf("task.priority critical"),
            "column 15: expected a comparison operator, got \"critical\"");
}

TEST(ExprTest, UnknownVariablesGetSuggestions) {
  EXPECT_EQ(ErrorOf("task.prio == high"),
            "column 1: unknown variable \"task.prio\", did you mean "
            "\"task.priority\"?");
  EXPECT_EQ(ErrorOf("task.agent == coder"),
            "column 1: unknown variable \"task.agent\", did you mean "
            "\"task.agent_type\"?");
  EXPECT_EQ(ErrorOf("task.estimated_minute < 30"),
            "column 1: unknown variable \"task.estimated_minute\", did you "
            "mean \"task.estimated_minutes\"?");
  // Without the "task." prefix.
  EXPECT_EQ(ErrorOf("priority == high"),
            "column 1: unknown variable \"priority\", did you mean "
            "\"task.priority\"?");
  EXPECT_EQ(ErrorOf("cost_daily_usd > max_cost_usd", BreakerSchema()),
            "column 18: unknown variable \"max_cost_usd\", did you mean "
            "\"daily_limits.max_cost_usd\"?");
  EXPECT_EQ(ErrorOf("cost_daily > 5", BreakerSchema()),
            "column 1: unknown variable \"cost_daily\", did you mean "
            "\"cost_daily_usd\"?");
  EXPECT_EQ(ErrorOf("Task.Priority == high"),
            "column 1: unknown variable \"Task.Priority\", did you mean "
            "\"task.priority\"?");
  // Dotted words are variables; with no close one, the known ones are listed
  // or quoting is suggested.
  EXPECT_EQ(ErrorOf("task.product == x && task.cost > 1"),
            "column 22: unknown variable \"task.cost\"; known: task.priority, "
            "task.priority_value, task.estimated_minutes, "
            "task.estimated_tokens, task.product, task.agent_type, "
            "task.workflow_id, task.requester, task.preemptible");
  EXPECT_EQ(ErrorOf("task.agent_type == gpt-4.1"),
            "column 20: unknown variable \"gpt-4.1\" (quote text that contains "
            "\".\")");
  EXPECT_TRUE(EvalTask("task.agent_type == 'gpt-4.1'", [] {
    Task t;
    t.agent_type = "gpt-4.1";
    return t;
  }()));
  // A comparison that reads no variable names its unknown word.
  EXPECT_EQ(ErrorOf("prio == high"), "column 1: unknown variable \"prio\"");
  EXPECT_EQ(ErrorOf("1 == 1"),
            "column 1: compares two constants; one side must read a variable");
  EXPECT_EQ(ErrorOf("'a' in [a]"),
            "column 1: the left side of \"in\" must read a variable");
  EXPECT_EQ(ErrorOf("foo"), "column 1: unknown variable \"foo\"");
  EXPECT_EQ(ErrorOf("task.preemptible && bar"),
            "column 21: unknown variable \"bar\"");
  EXPECT_EQ(ErrorOf("task.estimated_minutes * minutes > 1"),
            "column 26: unknown variable \"minutes\"");
}

TEST(ExprTest, BadLevelNames) {
  EXPECT_EQ(ErrorOf("task.priority == critcal"),
            "column 18: unknown priority level \"critcal\", did you mean "
            "\"critical\"?");
  EXPECT_EQ(ErrorOf("task.priority>=Critical"),
            "column 16: unknown priority level \"Critical\", did you mean "
            "\"critical\"?");
  EXPECT_EQ(ErrorOf("task.priority in [high, urgent]"),
            "column 25: unknown priority level \"urgent\" (levels: low, normal "
            "or medium, high, critical)");
  EXPECT_EQ(ErrorOf("hgih < task.priority"),
            "column 1: unknown priority level \"hgih\", did you mean "
            "\"high\"?");
}

TEST(ExprTest, SyntaxErrors) {
  EXPECT_EQ(ErrorOf(""), "column 1: empty condition");
  EXPECT_EQ(ErrorOf("  \t "), "column 1: empty condition");
  EXPECT_EQ(ErrorOf("x =="),
            "column 5: expected an operand, got end of "
            "condition");
  EXPECT_EQ(ErrorOf("task.preemptible &&"),
            "column 20: expected an operand, got end of condition");
  EXPECT_EQ(ErrorOf("task.estimated_minutes < )"),
            "column 26: expected an operand, got \")\"");
  // Unbalanced parentheses.
  EXPECT_EQ(ErrorOf("(task.preemptible"),
            "column 18: expected \")\" to close the \"(\" at column 1, got end "
            "of condition");
  EXPECT_EQ(ErrorOf("task.preemptible && ((task.preemptible)"),
            "column 40: expected \")\" to close the \"(\" at column 21, got "
            "end of condition");
  EXPECT_EQ(ErrorOf("task.preemptible)"),
            "column 17: unbalanced \")\": no \"(\" to close");
  EXPECT_EQ(ErrorOf("()"), "column 2: expected an operand, got \")\"");
  // Trailing garbage.
  EXPECT_EQ(ErrorOf("task.priority == high low"),
            "column 23: expected \"&&\", \"||\" or end of condition, got "
            "\"low\"");
  EXPECT_EQ(ErrorOf("task.preemptible task.preemptible"),
            "column 18: expected \"&&\", \"||\" or end of condition, got "
            "\"task.preemptible\"");
  EXPECT_EQ(ErrorOf("(task.preemptible) == true"),
            "column 20: expected \"&&\", \"||\" or end of condition, got "
            "\"==\"");
  // Operators people spell differently.
  EXPECT_EQ(ErrorOf("task.priority = high"),
            "column 15: unexpected \"=\", did you mean \"==\"?");
  EXPECT_EQ(ErrorOf("task.preemptible & true"),
            "column 18: unexpected \"&\", did you mean \"&&\"?");
  EXPECT_EQ(ErrorOf("task.preemptible | true"),
            "column 18: unexpected \"|\", did you mean \"||\"?");
  EXPECT_EQ(ErrorOf("task.preemptible and true"),
            "column 18: unexpected \"and\", did you mean \"&&\"?");
  EXPECT_EQ(ErrorOf("(task.preemptible or true)"),
            "column 19: unexpected \"or\", did you mean \"||\"?");
  EXPECT_EQ(ErrorOf("task.product not in [a]"),
            "column 14: unexpected \"not\", did you mean \"!in\"?");
  EXPECT_EQ(ErrorOf("not task.preemptible"),
            "column 1: unexpected \"not\", did you mean \"!\"?");
  // Lists.
  EXPECT_EQ(ErrorOf("task.product in a"),
            "column 17: expected \"[\" after \"in\", got \"a\"");
  EXPECT_EQ(ErrorOf("task.product in []"),
            "column 18: expected a literal, got \"]\"");
  EXPECT_EQ(ErrorOf("task.product in [a,]"),
            "column 20: expected a literal, got \"]\"");
  EXPECT_EQ(ErrorOf("task.product in [a b]"),
            "column 20: expected \",\" or \"]\", got \"b\"");
  EXPECT_EQ(ErrorOf("task.product in [a"),
            "column 19: expected \",\" or \"]\", got end of condition");
  EXPECT_EQ(ErrorOf("task.product in [task.requester]"),
            "column 18: list items must be literals; \"task.requester\" is a "
            "variable");
  // Tokens.
  EXPECT_EQ(ErrorOf("task.product == \"web"),
            "column 17: unterminated string: no closing '\"'");
  EXPECT_EQ(ErrorOf("task.product == 'web"),
            "column 17: unterminated string: no closing \"'\"");
  EXPECT_EQ(ErrorOf("task.product == #web"),
            "column 17: unexpected character \"#\"");
  EXPECT_EQ(ErrorOf("task.product == \xc3\xa9t\xc3\xa9"),
            "column 17: unexpected non-ASCII character");
  EXPECT_EQ(ErrorOf("task.estimated_minutes < 1e999"),
            "column 26: number \"1e999\" is out of range");
  EXPECT_EQ(ErrorOf("task.estimated_minutes / 0 > 1"),
            "column 26: division by zero");
  EXPECT_EQ(ErrorOf("default && task.preemptible"),
            "column 1: \"default\" must be the whole condition");
}

TEST(ExprTest, CompileErrorGivesTheByteOffset) {
  CompileError error;
  StatusOr<Condition> c =
      Condition::Compile("task.priority == critcal", TaskSchema(), &error);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(error.offset, 17u);
  EXPECT_EQ(error.message,
            "unknown priority level \"critcal\", did you mean \"critical\"?");
}

TEST(ExprTest, HostileInputIsRefusedNotFatal) {
  // Nesting: 64 levels compile, 65 do not.
  const std::string ok64 =
      std::string(64, '(') + "task.preemptible" + std::string(64, ')');
  EXPECT_TRUE(Condition::Compile(ok64, TaskSchema()).ok());
  const std::string deep65 =
      std::string(65, '(') + "task.preemptible" + std::string(65, ')');
  EXPECT_EQ(ErrorOf(deep65),
            "column 65: conditions nest more than 64 levels "
            "deep");
  EXPECT_EQ(ErrorOf(std::string(64, '!') + "(task.preemptible)"),
            "column 65: conditions nest more than 64 levels deep");
  EXPECT_TRUE(Condition::Compile(std::string(64, '!') + "task.preemptible",
                                 TaskSchema())
                  .ok());
  EXPECT_EQ(ErrorOf(std::string(4000, '(')),
            "column 65: conditions nest more than 64 levels deep");

  // Length: up to 4096 bytes compile.
  std::string long_ok = "task.preemptible";
  while (long_ok.size() + 20 <= 4096) long_ok += " || task.preemptible";
  long_ok.resize(4096, ' ');
  const Condition wide = MustCompile(long_ok);
  Task t;
  t.preemptible = true;
  EXPECT_TRUE(wide.Evaluate(t.Values()));
  EXPECT_EQ(ErrorOf(long_ok + " "),
            "column 4097: condition is longer than 4096 bytes");
  EXPECT_EQ(ErrorOf(std::string(100000, 'a')),
            "column 4097: condition is longer than 4096 bytes");
}

// Compile never crashes on random or mutated text: it either compiles (and
// the condition evaluates) or returns INVALID_REQUEST with a column inside
// the text.
TEST(ExprFuzzTest, RandomAndMutatedInputsNeverCrash) {
  const std::vector<std::string> seeds = {
      "task.priority == critical",
      "task.estimated_minutes < 30",
      "default",
      "task.product == urgent-project",
      "(task.priority >= high || task.product in [a, 'b', \"c\"]) && "
      "!task.preemptible",
      "task.estimated_tokens / task.estimated_minutes * 2 !in [1, 2.5, 1e3]",
      "cost_daily_usd > daily_limits.max_cost_usd",
      "projected_cost_daily_usd >= 0.9 * daily_limits.max_cost_usd",
  };
  // Space-separated pieces of conditions, right and wrong.
  std::vector<std::string> fragments = {" ", "\t", "\xff", "\"y", "'x'"};
  {
    const std::string pieces =
        "task.priority task.product task.estimated_minutes task.preemptible "
        "task.prio cost_daily_usd daily_limits.max_cost_usd == != < <= > >= "
        "&& || ! ( ) [ ] , * / in !in not and true false high critcal medium "
        "30 -1 0.9 1e6 1e999 0 . - default = & | #";
    size_t start = 0;
    while (start < pieces.size()) {
      size_t end = pieces.find(' ', start);
      if (end == std::string::npos) end = pieces.size();
      fragments.push_back(pieces.substr(start, end - start));
      start = end + 1;
    }
  }
  const std::string alphabet =
      "abcdefghijklmnopqrstuvwxyz._-0123456789 ()[]!=<>&|*/,'\"\t\n#\\";
  std::mt19937 rng(20260126);
  auto pick = [&rng](size_t n) {
    return std::uniform_int_distribution<size_t>(0, n - 1)(rng);
  };
  size_t compiled = 0;
  size_t refused = 0;
  for (int i = 0; i < 6000; ++i) {
    std::string text;
    switch (i % 3) {
      case 0: {  // pieces in random order
        const size_t n = 1 + pick(12);
        for (size_t k = 0; k < n; ++k) {
          text += fragments[pick(fragments.size())];
          if (pick(3) != 0) text += ' ';
        }
        break;
      }
      case 1: {  // a valid condition with a few edits
        text = seeds[pick(seeds.size())];
        const size_t edits = 1 + pick(4);
        for (size_t k = 0; k < edits; ++k) {
          const size_t at = pick(text.size() + 1);
          const char c = alphabet[pick(alphabet.size())];
          switch (pick(3)) {
            case 0:
              text.insert(text.begin() + at, c);
              break;
            case 1:
              if (at < text.size()) text.erase(at, 1);
              break;
            default:
              if (at < text.size()) text[at] = c;
              break;
          }
        }
        break;
      }
      default: {  // arbitrary bytes
        const size_t n = pick(48);
        for (size_t k = 0; k < n; ++k) text += static_cast<char>(pick(256));
        break;
      }
    }
    const Schema& schema = pick(3) == 0 ? BreakerSchema() : TaskSchema();
    CompileError error;
    StatusOr<Condition> c = Condition::Compile(text, schema, &error);
    if (c.ok()) {
      ++compiled;
      std::vector<Value> values(schema.size());
      for (size_t v = 0; v < schema.size(); ++v) {
        if (pick(4) == 0) continue;  // absent
        switch (schema[v].type) {
          case expr::Type::kNumber:
            values[v] = static_cast<double>(pick(100));
            break;
          case expr::Type::kString:
            values[v] = std::string("x");
            break;
          case expr::Type::kBool:
            values[v] = pick(2) == 0;
            break;
          case expr::Type::kLevel:
            values[v] = static_cast<Level>(pick(kNumLevels));
            break;
        }
      }
      c->Evaluate(values);
      continue;
    }
    ++refused;
    EXPECT_EQ(c.status().code(), Code::kInvalidRequest) << text;
    EXPECT_LE(error.offset, text.size()) << text;
    EXPECT_FALSE(error.message.empty()) << text;
    EXPECT_EQ(c.status().message().rfind(
                  "column " + std::to_string(error.offset + 1) + ": ", 0),
              0u)
        << text;
  }
  // The generator reaches both outcomes.
  EXPECT_GT(compiled, 50u);
  EXPECT_GT(refused, 2000u);
}

}  // namespace
}  // namespace qm
