#include "config/yaml_config.h"

#include <yaml-cpp/yaml.h>

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "core/text.h"

namespace qm {
namespace {

// Largest capacity or per-workflow amount accepted. The engine keeps amounts
// as thousandths in 64-bit integers; this bound keeps every sum of them far
// from overflow.
constexpr double kMaxAmount = 1e12;
constexpr int kMaxResourceNameLength = 64;

// ---- The schema: every mapping whose keys are fixed. ----

// Paths of the fixed-key sections. "<name>" stands for a name the user
// chooses (a resource, a product), "<level>" for a priority level, "[]" for
// any list item.
constexpr std::string_view kRoot = "";
constexpr std::string_view kResourceSpec = "resources.<name>";
constexpr std::string_view kMaxConcurrent = "max_concurrent";
constexpr std::string_view kPriorityLevels = "priority_levels";
constexpr std::string_view kPriorityLevel = "priority_levels.<level>";
constexpr std::string_view kDailyLimits = "daily_limits";
constexpr std::string_view kProduct = "products.<name>";
constexpr std::string_view kAutoModelSelection = "auto_model_selection";
constexpr std::string_view kModelRule = "auto_model_selection.rules[]";
constexpr std::string_view kCircuitBreaker = "circuit_breaker";
constexpr std::string_view kWhenTripped = "circuit_breaker.when_tripped";
constexpr std::string_view kManualOverride = "manual_override";
constexpr std::string_view kResourcePolicies = "resource_policies";
constexpr std::string_view kAllocationLimits =
    "resource_policies.allocation_limits";
constexpr std::string_view kPriorityWeights =
    "resource_policies.priority_weights";
constexpr std::string_view kOptimizationTargets =
    "resource_policies.optimization_targets";
constexpr std::string_view kMonitoringIntervals =
    "resource_policies.monitoring_intervals";
constexpr std::string_view kAutoRelease = "auto_release";
constexpr std::string_view kScheduling = "scheduling";
constexpr std::string_view kScoreWeights = "scheduling.weights";

// A mapping with fixed keys, in the order the documentation lists them.
struct Section {
  std::string_view path;
  std::vector<std::string> keys;
};

const std::vector<Section>& Sections() {
  static const std::vector<Section>* const kSections = new std::vector<Section>{
      {kRoot,
       {"resources", "max_concurrent", "token_budgets", "priority_levels",
        "daily_limits", "products", "auto_model_selection", "circuit_breaker",
        "manual_override", "resource_policies", "auto_release", "scheduling"}},
      {kResourceSpec, {"capacity", "fractional"}},
      {kMaxConcurrent, {"total", "per_type"}},
      {kPriorityLevels, {"critical", "high", "normal", "medium", "low"}},
      {kPriorityLevel, {"max_wait_time_minutes", "preempt_lower", "weight"}},
      {kDailyLimits, {"max_tokens_total", "max_cost_usd", "alert_at_percent"}},
      {kProduct,
       {"priority", "max_concurrent_agents", "token_budget_daily", "share"}},
      {kAutoModelSelection, {"rules"}},
      {kModelRule, {"condition", "model"}},
      {kCircuitBreaker, {"trip_conditions", "when_tripped"}},
      {kWhenTripped, {"action", "notify", "allow_override"}},
      {kManualOverride, {"pause_all_agents", "priority_override"}},
      {kResourcePolicies,
       {"allocation_limits", "priority_weights", "optimization_targets",
        "monitoring_intervals"}},
      {kAllocationLimits,
       {"max_cpu_per_workflow", "max_memory_per_workflow",
        "max_agents_per_workflow", "max_duration"}},
      {kPriorityWeights, {"critical", "high", "medium", "normal", "low"}},
      {kOptimizationTargets,
       {"efficiency_threshold", "response_time_target", "utilization_target",
        "conflict_tolerance"}},
      {kMonitoringIntervals,
       {"resource_check", "performance_sample", "capacity_analysis",
        "trend_analysis"}},
      {kAutoRelease,
       {"on_completion", "on_timeout", "on_failure", "grace_period"}},
      {kScheduling,
       {"weights", "default_total_tasks", "fair_share_half_life",
        "preemption_grace", "default_ttl", "restrict_agent_types",
        "history_limit"}},
      {kScoreWeights, {"priority", "wait", "blocking", "fair_share"}},
  };
  return *kSections;
}

const std::vector<std::string>& KeysOf(std::string_view section) {
  for (const Section& s : Sections()) {
    if (s.path == section) return s.keys;
  }
  static const std::vector<std::string>* const kNone =
      new std::vector<std::string>();
  return *kNone;
}

std::string JoinPath(std::string_view parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  return std::string(parent) + "." + std::string(key);
}

// What to say about `key`, unknown in `section`: a near spelling in the same
// section, else the same key in another section, else a farther spelling,
// else the list of valid keys.
std::string UnknownKeyMessage(std::string_view section,
                              const std::string& key) {
  const std::vector<std::string>& keys = KeysOf(section);
  const std::string near = ClosestMatch(key, keys);
  if (!near.empty() && EditDistance(key, near) <= 1) {
    return "unknown key, did you mean " + Quote(near) + "?";
  }
  std::vector<std::string> elsewhere;
  for (const Section& s : Sections()) {
    if (s.path == section) continue;
    for (const std::string& k : s.keys) {
      if (k == key) elsewhere.push_back(JoinPath(s.path, k));
    }
  }
  if (!elsewhere.empty()) {
    std::string message = "unknown key here, did you mean ";
    for (size_t i = 0; i < elsewhere.size(); ++i) {
      if (i > 0) message += " or ";
      message += Quote(elsewhere[i]);
    }
    return message + "?";
  }
  if (!near.empty()) return "unknown key, did you mean " + Quote(near) + "?";
  std::string message = "unknown key, expected one of: ";
  for (size_t i = 0; i < keys.size(); ++i) {
    if (i > 0) message += ", ";
    message += keys[i];
  }
  return message;
}

// ---- Scalar text. ----

// Whether the scalar was written quoted (or tagged !!str): such a scalar is
// a string even when its text looks like a number or a boolean.
bool IsQuoted(const YAML::Node& node) {
  return node.Tag() == "!" || node.Tag() == "tag:yaml.org,2002:str";
}

// "got ..." for error messages.
std::string Got(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return "got " + Quote(node.Scalar());
    case YAML::NodeType::Sequence:
      return "got a list";
    case YAML::NodeType::Map:
      return "got a mapping";
    default:
      return "got nothing";
  }
}

bool ParseInt(std::string_view text, int64_t* out, bool* overflow) {
  *overflow = false;
  if (!text.empty() && text[0] == '+') text.remove_prefix(1);
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, *out);
  if (ec == std::errc::result_out_of_range && ptr == end) *overflow = true;
  return ec == std::errc() && ptr == end && !text.empty();
}

// A finite number in decimal or exponent notation.
bool ParseNumber(std::string_view text, double* out) {
  if (!text.empty() && text[0] == '+') text.remove_prefix(1);
  if (text.empty()) return false;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] =
      std::from_chars(text.data(), end, *out, std::chars_format::general);
  return ec == std::errc() && ptr == end && std::isfinite(*out);
}

bool IsBoolText(std::string_view text, bool* out) {
  if (text == "true" || text == "True" || text == "TRUE") {
    *out = true;
    return true;
  }
  if (text == "false" || text == "False" || text == "FALSE") {
    *out = false;
    return true;
  }
  return false;
}

bool AllDigits(std::string_view text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// "1.5h", "1.0s": one decimal number and one unit, as seed 000 writes
// response_time_target. False unless it is a whole number of milliseconds.
bool ParseDecimalDuration(std::string_view text, Duration* out) {
  const size_t dot = text.find('.');
  size_t unit_at = dot + 1;
  while (unit_at < text.size() &&
         std::isdigit(static_cast<unsigned char>(text[unit_at]))) {
    ++unit_at;
  }
  const std::string_view whole = text.substr(0, dot);
  const std::string_view fraction = text.substr(dot + 1, unit_at - dot - 1);
  const std::string_view unit = text.substr(unit_at);
  if (!AllDigits(whole) || !AllDigits(fraction) || whole.size() > 9 ||
      fraction.size() > 9) {
    return false;
  }
  int64_t unit_ms;
  if (unit == "ms") {
    unit_ms = 1;
  } else if (unit == "s") {
    unit_ms = 1000;
  } else if (unit == "m") {
    unit_ms = 60'000;
  } else if (unit == "h") {
    unit_ms = 3'600'000;
  } else if (unit == "d") {
    unit_ms = 86'400'000;
  } else {
    return false;
  }
  int64_t scale = 1;
  for (size_t i = 0; i < fraction.size(); ++i) scale *= 10;
  const int64_t fraction_ms = std::stoll(std::string(fraction)) * unit_ms;
  if (fraction_ms % scale != 0) return false;
  *out =
      Duration(std::stoll(std::string(whole)) * unit_ms + fraction_ms / scale);
  return true;
}

// qm::ParseDuration's forms ("30s", "1h30m", "250ms", "1d", a whole number of
// seconds), plus one decimal number with one unit ("1.5h"). Digit runs are
// bounded so that no accepted text overflows.
bool ParseConfigDuration(std::string_view text, Duration* out) {
  if (AllDigits(text)) {
    return text.size() <= 12 && ParseDuration(std::string(text), out);
  }
  if (text.find('.') != std::string_view::npos) {
    return ParseDecimalDuration(text, out);
  }
  size_t run = 0;
  for (char c : text) {
    run = std::isdigit(static_cast<unsigned char>(c)) ? run + 1 : 0;
    if (run > 9) return false;
  }
  return ParseDuration(std::string(text), out);
}

// The inclusive or exclusive bounds of a number, and how to say them.
struct Range {
  double min = 0;
  bool min_exclusive = false;
  double max = std::numeric_limits<double>::infinity();

  bool Contains(double v) const {
    return (min_exclusive ? v > min : v >= min) && v <= max;
  }
  std::string Describe() const {
    if (std::isinf(max)) {
      return std::string("a number ") + (min_exclusive ? "> " : ">= ") +
             FormatNumber(min);
    }
    if (min_exclusive) {
      return "a number > " + FormatNumber(min) + " and <= " + FormatNumber(max);
    }
    return "a number from " + FormatNumber(min) + " to " + FormatNumber(max);
  }
};

constexpr Range kNonNegative{};
constexpr Range kPositive{0, true};
constexpr Range kFraction{0, false, 1};
constexpr Range kPercent{0, false, 100};

// A node, where errors about it point, and the key path that names it.
// Never assign one Field to another: YAML::Node's operator= writes into the
// document instead of rebinding. Construct (or std::optional::emplace) them.
struct Field {
  YAML::Node node;
  // The mark of its key when it is a mapping value (so an error points at
  // the line that names the setting), else of the node itself.
  YAML::Mark mark;
  std::string path;
};

// Reads one config node into Config::Defaults(). Stops at the first error.
class Reader {
 public:
  explicit Reader(const std::string& source)
      : source_(source), config_(Config::Defaults()) {}

  StatusOr<Config> Read(const YAML::Node& root);

 private:
  using EntryFn = std::function<Status(const std::string&, const Field&)>;
  using ItemFn = std::function<Status(const Field&)>;

  std::string Where(const YAML::Mark& mark) const;
  Status Error(const Field& field, const std::string& what) const;

  // Calls fn(key, value) for each entry of the mapping `field` in document
  // order. Null counts as an empty mapping. Keys must be non-empty names and
  // appear once. ForEachKnownEntry also requires each key to be one of the
  // keys of `section`.
  Status ForEachEntry(const Field& field, const EntryFn& fn) const;
  Status ForEachKnownEntry(const Field& field, std::string_view section,
                           const EntryFn& fn) const;
  // Calls fn(item) for each item of the list `field`; null is an empty list.
  Status ForEachItem(const Field& field, const ItemFn& fn) const;

  // Scalars. The Optional forms read null as "unset".
  Status ReadInt(const Field& field, int64_t min, int64_t* out) const;
  Status ReadOptionalInt(const Field& field, int64_t min,
                         std::optional<int64_t>* out) const;
  Status ReadNumber(const Field& field, const Range& range, double* out) const;
  // A resource amount: >= 0, at most kMaxAmount, whole thousandths.
  Status ReadAmount(const Field& field, double* out) const;
  Status ReadOptionalAmount(const Field& field,
                            std::optional<double>* out) const;
  Status ReadBool(const Field& field, bool* out) const;
  Status ReadString(const Field& field, bool allow_empty,
                    std::string* out) const;
  Status ReadDuration(const Field& field, bool allow_zero, Duration* out) const;
  Status ReadLevel(const Field& field, Level* out) const;
  // A key naming a level in priority_levels or priority_weights; refuses
  // "medium" and "normal" both in one mapping.
  Status LevelKey(const std::string& key, const Field& field,
                  std::array<std::optional<YAML::Mark>, kNumLevels>* seen,
                  Level* level) const;

  // Sections.
  Status ReadResources(const Field& field);
  Status ReadMaxConcurrent(const Field& field);
  Status ReadTokenBudgets(const Field& field);
  Status ReadPriorityLevels(const Field& field);
  Status ReadDailyLimits(const Field& field);
  Status ReadProducts(const Field& field);
  Status ReadAutoModelSelection(const Field& field);
  Status ReadCircuitBreaker(const Field& field);
  Status ReadManualOverride(const Field& field);
  Status ReadResourcePolicies(const Field& field);
  Status ReadAutoRelease(const Field& field);
  Status ReadScheduling(const Field& field);
  // Cross-key rules and settings that depend on more than one key.
  Status Finish();

  const std::string source_;
  Config config_;
  // resources.agents and max_concurrent.total, checked against each other
  // in Finish().
  std::optional<std::pair<double, Field>> resources_agents_;
  std::optional<std::pair<int64_t, Field>> max_concurrent_total_;
  // Levels whose weight priority_levels sets (it wins over
  // resource_policies.priority_weights).
  std::array<bool, kNumLevels> weight_from_levels_{};
  std::array<std::optional<double>, kNumLevels> priority_weights_;
  // Where scheduling.restrict_agent_types is set.
  std::optional<Field> restrict_agent_types_;
};

std::string Reader::Where(const YAML::Mark& mark) const {
  if (mark.is_null()) return source_ + ": ";
  return source_ + ":" + std::to_string(mark.line + 1) + ":" +
         std::to_string(mark.column + 1) + ": ";
}

Status Reader::Error(const Field& field, const std::string& what) const {
  if (field.path.empty()) return InvalidRequest(Where(field.mark) + what);
  return InvalidRequest(Where(field.mark) + field.path + ": " + what);
}

Status Reader::ForEachEntry(const Field& field, const EntryFn& fn) const {
  if (field.node.IsNull()) return Status::Ok();
  if (!field.node.IsMap()) {
    return Error(field,
                 "must be a mapping of keys to values, " + Got(field.node));
  }
  std::map<std::string, YAML::Mark> seen;
  for (auto it = field.node.begin(); it != field.node.end(); ++it) {
    const YAML::Node key = it->first;
    YAML::Mark mark = key.Mark();
    if (mark.is_null()) mark = field.mark;
    if (!key.IsScalar() || key.Scalar().empty()) {
      return Error(Field{key, mark, field.path},
                   "keys must be non-empty names, " + Got(key));
    }
    const std::string& name = key.Scalar();
    const Field child{it->second, mark, JoinPath(field.path, name)};
    const auto [first, inserted] = seen.emplace(name, mark);
    if (!inserted) {
      return Error(child, "duplicate key, first given at line " +
                              std::to_string(first->second.line + 1) +
                              ", column " +
                              std::to_string(first->second.column + 1));
    }
    QM_RETURN_IF_ERROR(fn(name, child));
  }
  return Status::Ok();
}

Status Reader::ForEachKnownEntry(const Field& field, std::string_view section,
                                 const EntryFn& fn) const {
  const std::vector<std::string>& keys = KeysOf(section);
  return ForEachEntry(field, [&](const std::string& key, const Field& child) {
    for (const std::string& k : keys) {
      if (k == key) return fn(key, child);
    }
    return Error(child, UnknownKeyMessage(section, key));
  });
}

Status Reader::ForEachItem(const Field& field, const ItemFn& fn) const {
  if (field.node.IsNull()) return Status::Ok();
  if (!field.node.IsSequence()) {
    return Error(field, "must be a list, " + Got(field.node));
  }
  for (size_t i = 0; i < field.node.size(); ++i) {
    const YAML::Node item = field.node[i];
    YAML::Mark mark = item.Mark();
    if (mark.is_null()) mark = field.mark;
    QM_RETURN_IF_ERROR(
        fn(Field{item, mark, field.path + "[" + std::to_string(i) + "]"}));
  }
  return Status::Ok();
}

Status Reader::ReadInt(const Field& field, int64_t min, int64_t* out) const {
  const std::string want = "must be a whole number >= " + std::to_string(min);
  const YAML::Node& node = field.node;
  if (!node.IsScalar()) return Error(field, want + ", " + Got(node));
  int64_t value;
  bool overflow;
  const bool parsed = ParseInt(node.Scalar(), &value, &overflow);
  if (parsed && IsQuoted(node)) {
    return Error(field, want + ", got the quoted string " +
                            Quote(node.Scalar()) +
                            " (write numbers without quotes)");
  }
  if (overflow) return Error(field, "is too large, " + Got(node));
  if (!parsed || value < min) return Error(field, want + ", " + Got(node));
  *out = value;
  return Status::Ok();
}

Status Reader::ReadOptionalInt(const Field& field, int64_t min,
                               std::optional<int64_t>* out) const {
  if (field.node.IsNull()) {
    out->reset();
    return Status::Ok();
  }
  int64_t value;
  QM_RETURN_IF_ERROR(ReadInt(field, min, &value));
  *out = value;
  return Status::Ok();
}

Status Reader::ReadNumber(const Field& field, const Range& range,
                          double* out) const {
  const std::string want = "must be " + range.Describe();
  const YAML::Node& node = field.node;
  if (!node.IsScalar()) return Error(field, want + ", " + Got(node));
  double value;
  const bool parsed = ParseNumber(node.Scalar(), &value);
  if (parsed && IsQuoted(node)) {
    return Error(field, want + ", got the quoted string " +
                            Quote(node.Scalar()) +
                            " (write numbers without quotes)");
  }
  if (!parsed || !range.Contains(value)) {
    return Error(field, want + ", " + Got(node));
  }
  *out = value;
  return Status::Ok();
}

Status Reader::ReadAmount(const Field& field, double* out) const {
  double value;
  QM_RETURN_IF_ERROR(ReadNumber(field, kNonNegative, &value));
  if (value > kMaxAmount) {
    return Error(field, "must be at most " + FormatNumber(kMaxAmount) + ", " +
                            Got(field.node));
  }
  const double thousandths = value * 1000;
  if (std::fabs(thousandths - std::round(thousandths)) > 1e-6) {
    return Error(field,
                 "must have at most 3 decimal places (amounts are counted in "
                 "thousandths), " +
                     Got(field.node));
  }
  *out = value;
  return Status::Ok();
}

Status Reader::ReadOptionalAmount(const Field& field,
                                  std::optional<double>* out) const {
  if (field.node.IsNull()) {
    out->reset();
    return Status::Ok();
  }
  double value;
  QM_RETURN_IF_ERROR(ReadAmount(field, &value));
  *out = value;
  return Status::Ok();
}

Status Reader::ReadBool(const Field& field, bool* out) const {
  const YAML::Node& node = field.node;
  bool value;
  if (!node.IsScalar() || !IsBoolText(node.Scalar(), &value)) {
    return Error(field, "must be true or false, " + Got(node));
  }
  if (IsQuoted(node)) {
    return Error(field, "must be true or false, got the quoted string " +
                            Quote(node.Scalar()) +
                            " (write true or false without quotes)");
  }
  *out = value;
  return Status::Ok();
}

Status Reader::ReadString(const Field& field, bool allow_empty,
                          std::string* out) const {
  const YAML::Node& node = field.node;
  if (!node.IsScalar()) {
    return Error(field, std::string("must be a ") +
                            (allow_empty ? "" : "non-empty ") + "string, " +
                            Got(node));
  }
  if (!allow_empty && node.Scalar().empty()) {
    return Error(field, "must be a non-empty string");
  }
  *out = node.Scalar();
  return Status::Ok();
}

Status Reader::ReadDuration(const Field& field, bool allow_zero,
                            Duration* out) const {
  const YAML::Node& node = field.node;
  Duration value;
  if (!node.IsScalar() || !ParseConfigDuration(node.Scalar(), &value)) {
    return Error(field,
                 "must be a duration such as \"30s\", \"5m\", \"1h30m\", "
                 "\"250ms\", \"1d\" or a whole number of seconds, " +
                     Got(node));
  }
  if (!allow_zero && value.count() == 0) {
    return Error(field, "must be longer than 0s, " + Got(node));
  }
  *out = value;
  return Status::Ok();
}

Status Reader::ReadLevel(const Field& field, Level* out) const {
  const YAML::Node& node = field.node;
  if (node.IsScalar() && LevelFromName(node.Scalar(), out)) {
    return Status::Ok();
  }
  std::string what =
      "must be one of critical, high, normal (or medium), low, " + Got(node);
  if (node.IsScalar()) {
    const std::string near =
        ClosestMatch(node.Scalar(), {"critical", "high", "normal", "low"});
    if (!near.empty()) what += ", did you mean " + Quote(near) + "?";
  }
  return Error(field, what);
}

Status Reader::LevelKey(const std::string& key, const Field& field,
                        std::array<std::optional<YAML::Mark>, kNumLevels>* seen,
                        Level* level) const {
  LevelFromName(key, level);  // The section's key list admits only levels.
  std::optional<YAML::Mark>& first = (*seen)[static_cast<int>(*level)];
  if (first.has_value()) {
    return Error(field,
                 "\"medium\" and \"normal\" name the same level; the "
                 "other one is given at line " +
                     std::to_string(first->line + 1) + ", column " +
                     std::to_string(first->column + 1));
  }
  first = field.mark;
  return Status::Ok();
}

StatusOr<Config> Reader::Read(const YAML::Node& root) {
  if (!root.IsDefined() || root.IsNull()) return config_;
  const Field field{root, root.Mark(), ""};
  if (!root.IsMap()) {
    return Error(
        field,
        "the configuration must be a mapping of keys to values, " + Got(root));
  }
  QM_RETURN_IF_ERROR(ForEachKnownEntry(
      field, kRoot, [&](const std::string& key, const Field& child) {
        if (key == "resources") return ReadResources(child);
        if (key == "max_concurrent") return ReadMaxConcurrent(child);
        if (key == "token_budgets") return ReadTokenBudgets(child);
        if (key == "priority_levels") return ReadPriorityLevels(child);
        if (key == "daily_limits") return ReadDailyLimits(child);
        if (key == "products") return ReadProducts(child);
        if (key == "auto_model_selection") {
          return ReadAutoModelSelection(child);
        }
        if (key == "circuit_breaker") return ReadCircuitBreaker(child);
        if (key == "manual_override") return ReadManualOverride(child);
        if (key == "resource_policies") return ReadResourcePolicies(child);
        if (key == "auto_release") return ReadAutoRelease(child);
        return ReadScheduling(child);
      }));
  QM_RETURN_IF_ERROR(Finish());
  return config_;
}

bool IsResourceName(const std::string& name) {
  if (name.empty() || name.size() > kMaxResourceNameLength) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '.' || c == '-')) {
      return false;
    }
  }
  return true;
}

Status Reader::ReadResources(const Field& field) {
  return ForEachEntry(field, [&](const std::string& name, const Field& child) {
    if (!IsResourceName(name)) {
      return Error(child,
                   "resource names may use only a-z, 0-9, '_', '.' and '-' "
                   "and at most " +
                       std::to_string(kMaxResourceNameLength) + " characters");
    }
    ResourceSpec* existing = nullptr;
    for (ResourceSpec& r : config_.resources) {
      if (r.name == name) existing = &r;
    }
    ResourceSpec spec =
        existing != nullptr ? *existing : ResourceSpec{name, 0, false};
    std::optional<Field> capacity_field;  // when apart from `child`
    if (child.node.IsMap()) {
      bool has_capacity = false;
      QM_RETURN_IF_ERROR(ForEachKnownEntry(
          child, kResourceSpec, [&](const std::string& key, const Field& f) {
            if (key == "fractional") return ReadBool(f, &spec.fractional);
            has_capacity = true;
            capacity_field.emplace(f);
            return ReadAmount(f, &spec.capacity);
          }));
      if (!has_capacity && existing == nullptr) {
        return Error(child, "a new resource needs a capacity");
      }
    } else if (child.node.IsScalar()) {
      QM_RETURN_IF_ERROR(ReadAmount(child, &spec.capacity));
    } else {
      return Error(child,
                   "must be a capacity (a number >= 0) or a mapping "
                   "{capacity: N, fractional: true|false}, " +
                       Got(child.node));
    }
    if (!spec.fractional && spec.capacity != std::floor(spec.capacity)) {
      const Field& at = capacity_field.has_value() ? *capacity_field : child;
      return Error(at, "must be a whole number because " + Quote(name) +
                           " counts whole units (set fractional: true to allow "
                           "parts), " +
                           Got(at.node));
    }
    if (name == "agents") resources_agents_.emplace(spec.capacity, child);
    if (existing != nullptr) {
      *existing = spec;
    } else {
      config_.resources.push_back(spec);
    }
    return Status::Ok();
  });
}

Status Reader::ReadMaxConcurrent(const Field& field) {
  return ForEachKnownEntry(
      field, kMaxConcurrent, [&](const std::string& key, const Field& child) {
        if (key == "total") {
          int64_t total;
          QM_RETURN_IF_ERROR(ReadInt(child, 0, &total));
          if (static_cast<double>(total) > kMaxAmount) {
            return Error(child, "must be at most " + FormatNumber(kMaxAmount) +
                                    ", " + Got(child.node));
          }
          max_concurrent_total_.emplace(total, child);
          return Status::Ok();
        }
        config_.per_type_limits.clear();
        return ForEachEntry(
            child, [&](const std::string& type, const Field& limit) {
              return ReadInt(limit, 0, &config_.per_type_limits[type]);
            });
      });
}

Status Reader::ReadTokenBudgets(const Field& field) {
  return ForEachEntry(field, [&](const std::string& key, const Field& child) {
    if (key == "multiplier") {
      return ReadNumber(child, Range{1}, &config_.token_budgets.multiplier);
    }
    return ReadInt(child, 0, &config_.token_budgets.per_type[key]);
  });
}

Status Reader::ReadPriorityLevels(const Field& field) {
  std::array<std::optional<YAML::Mark>, kNumLevels> seen;
  return ForEachKnownEntry(
      field, kPriorityLevels, [&](const std::string& key, const Field& child) {
        Level level;
        QM_RETURN_IF_ERROR(LevelKey(key, child, &seen, &level));
        const int index = static_cast<int>(level);
        PriorityLevelConfig& config = config_.levels[index];
        return ForEachKnownEntry(
            child, kPriorityLevel, [&](const std::string& k, const Field& f) {
              if (k == "max_wait_time_minutes") {
                return ReadNumber(f, kNonNegative, &config.max_wait_minutes);
              }
              if (k == "preempt_lower") {
                return ReadBool(f, &config.preempt_lower);
              }
              weight_from_levels_[index] = true;
              return ReadNumber(f, kFraction, &config.weight);
            });
      });
}

Status Reader::ReadDailyLimits(const Field& field) {
  DailyLimitsConfig& limits = config_.daily_limits;
  return ForEachKnownEntry(
      field, kDailyLimits, [&](const std::string& key, const Field& child) {
        if (key == "max_tokens_total") {
          return ReadOptionalInt(child, 0, &limits.max_tokens_total);
        }
        if (key == "max_cost_usd") {
          if (child.node.IsNull()) {
            limits.max_cost_usd.reset();
            return Status::Ok();
          }
          double cost;
          QM_RETURN_IF_ERROR(ReadNumber(child, kNonNegative, &cost));
          limits.max_cost_usd = cost;
          return Status::Ok();
        }
        constexpr Range kAlertPercent{0, true, 100};
        limits.alert_at_percent.clear();
        if (child.node.IsSequence()) {
          return ForEachItem(child, [&](const Field& item) {
            double percent;
            QM_RETURN_IF_ERROR(ReadNumber(item, kAlertPercent, &percent));
            limits.alert_at_percent.push_back(percent);
            return Status::Ok();
          });
        }
        double percent;
        QM_RETURN_IF_ERROR(ReadNumber(child, kAlertPercent, &percent));
        limits.alert_at_percent.push_back(percent);
        return Status::Ok();
      });
}

Status Reader::ReadProducts(const Field& field) {
  return ForEachEntry(field, [&](const std::string& name, const Field& child) {
    ProductConfig& product = config_.products[name];
    return ForEachKnownEntry(
        child, kProduct, [&](const std::string& key, const Field& f) {
          if (key == "priority") {
            if (f.node.IsNull()) {
              product.priority.reset();
              return Status::Ok();
            }
            Level level;
            QM_RETURN_IF_ERROR(ReadLevel(f, &level));
            product.priority = level;
            return Status::Ok();
          }
          if (key == "max_concurrent_agents") {
            return ReadOptionalInt(f, 0, &product.max_concurrent_agents);
          }
          if (key == "token_budget_daily") {
            return ReadOptionalInt(f, 0, &product.token_budget_daily);
          }
          return ReadNumber(f, kPositive, &product.share);
        });
  });
}

Status Reader::ReadAutoModelSelection(const Field& field) {
  return ForEachKnownEntry(
      field, kAutoModelSelection, [&](const std::string&, const Field& rules) {
        config_.model_rules.clear();
        return ForEachItem(rules, [&](const Field& item) {
          if (!item.node.IsMap()) {
            return Error(item,
                         "must be a mapping {condition: ..., model: ...}, " +
                             Got(item.node));
          }
          ModelRule rule;
          bool has_condition = false, has_model = false;
          QM_RETURN_IF_ERROR(ForEachKnownEntry(
              item, kModelRule, [&](const std::string& key, const Field& f) {
                if (key == "condition") {
                  has_condition = true;
                  return ReadString(f, false, &rule.condition);
                }
                has_model = true;
                return ReadString(f, false, &rule.model);
              }));
          if (!has_condition || !has_model) {
            return Error(item, std::string("missing key \"") +
                                   (has_condition ? "model" : "condition") +
                                   "\"");
          }
          config_.model_rules.push_back(rule);
          return Status::Ok();
        });
      });
}

Status Reader::ReadCircuitBreaker(const Field& field) {
  CircuitBreakerConfig& breaker = config_.circuit_breaker;
  return ForEachKnownEntry(
      field, kCircuitBreaker, [&](const std::string& key, const Field& child) {
        if (key == "trip_conditions") {
          breaker.trip_conditions.clear();
          return ForEachItem(child, [&](const Field& item) {
            std::string condition;
            QM_RETURN_IF_ERROR(ReadString(item, false, &condition));
            breaker.trip_conditions.push_back(condition);
            return Status::Ok();
          });
        }
        return ForEachKnownEntry(
            child, kWhenTripped, [&](const std::string& k, const Field& f) {
              if (k == "notify") return ReadString(f, true, &breaker.notify);
              if (k == "allow_override") {
                return ReadBool(f, &breaker.allow_override);
              }
              const std::vector<std::string> actions = {
                  "pause_all", "pause_new_low_priority"};
              if (f.node.IsScalar()) {
                for (const std::string& action : actions) {
                  if (f.node.Scalar() == action) {
                    breaker.action = action;
                    return Status::Ok();
                  }
                }
              }
              std::string what =
                  "must be pause_all or pause_new_low_priority, " + Got(f.node);
              if (f.node.IsScalar()) {
                const std::string near = ClosestMatch(f.node.Scalar(), actions);
                if (!near.empty())
                  what += ", did you mean " + Quote(near) + "?";
              }
              return Error(f, what);
            });
      });
}

Status Reader::ReadManualOverride(const Field& field) {
  ManualOverrideConfig& manual = config_.manual_override;
  return ForEachKnownEntry(
      field, kManualOverride, [&](const std::string& key, const Field& child) {
        if (key == "pause_all_agents") {
          return ReadBool(child, &manual.pause_all_agents);
        }
        manual.priority_override.clear();
        return ForEachEntry(child,
                            [&](const std::string& product, const Field& f) {
                              Level level;
                              QM_RETURN_IF_ERROR(ReadLevel(f, &level));
                              manual.priority_override[product] = level;
                              return Status::Ok();
                            });
      });
}

Status Reader::ReadResourcePolicies(const Field& field) {
  return ForEachKnownEntry(
      field, kResourcePolicies,
      [&](const std::string& key, const Field& child) {
        if (key == "allocation_limits") {
          AllocationLimits& limits = config_.allocation_limits;
          return ForEachKnownEntry(
              child, kAllocationLimits,
              [&](const std::string& k, const Field& f) {
                if (k == "max_cpu_per_workflow") {
                  return ReadOptionalAmount(f, &limits.max_cpu_per_workflow);
                }
                if (k == "max_memory_per_workflow") {
                  return ReadOptionalAmount(f, &limits.max_memory_per_workflow);
                }
                if (k == "max_agents_per_workflow") {
                  return ReadOptionalInt(f, 0, &limits.max_agents_per_workflow);
                }
                return ReadDuration(f, false, &limits.max_duration);
              });
        }
        if (key == "priority_weights") {
          std::array<std::optional<YAML::Mark>, kNumLevels> seen;
          return ForEachKnownEntry(
              child, kPriorityWeights,
              [&](const std::string& k, const Field& f) {
                Level level;
                QM_RETURN_IF_ERROR(LevelKey(k, f, &seen, &level));
                double weight;
                QM_RETURN_IF_ERROR(ReadNumber(f, kFraction, &weight));
                priority_weights_[static_cast<int>(level)] = weight;
                return Status::Ok();
              });
        }
        if (key == "optimization_targets") {
          OptimizationTargets& targets = config_.optimization_targets;
          return ForEachKnownEntry(
              child, kOptimizationTargets,
              [&](const std::string& k, const Field& f) {
                if (k == "efficiency_threshold") {
                  return ReadNumber(f, kPercent, &targets.efficiency_threshold);
                }
                if (k == "response_time_target") {
                  return ReadDuration(f, false, &targets.response_time_target);
                }
                if (k == "utilization_target") {
                  return ReadNumber(f, kPercent, &targets.utilization_target);
                }
                return ReadNumber(f, kFraction, &targets.conflict_tolerance);
              });
        }
        MonitoringIntervals& intervals = config_.monitoring_intervals;
        return ForEachKnownEntry(
            child, kMonitoringIntervals,
            [&](const std::string& k, const Field& f) {
              if (k == "resource_check") {
                return ReadDuration(f, false, &intervals.resource_check);
              }
              if (k == "performance_sample") {
                return ReadDuration(f, false, &intervals.performance_sample);
              }
              if (k == "capacity_analysis") {
                return ReadDuration(f, false, &intervals.capacity_analysis);
              }
              return ReadDuration(f, false, &intervals.trend_analysis);
            });
      });
}

Status Reader::ReadAutoRelease(const Field& field) {
  AutoReleaseConfig& release = config_.auto_release;
  return ForEachKnownEntry(
      field, kAutoRelease, [&](const std::string& key, const Field& child) {
        if (key == "on_completion") {
          return ReadBool(child, &release.on_completion);
        }
        if (key == "on_timeout") return ReadBool(child, &release.on_timeout);
        if (key == "on_failure") return ReadBool(child, &release.on_failure);
        return ReadDuration(child, true, &release.grace_period);
      });
}

Status Reader::ReadScheduling(const Field& field) {
  SchedulingConfig& scheduling = config_.scheduling;
  return ForEachKnownEntry(
      field, kScheduling, [&](const std::string& key, const Field& child) {
        if (key == "weights") {
          ScoreWeights& weights = scheduling.weights;
          return ForEachKnownEntry(
              child, kScoreWeights, [&](const std::string& k, const Field& f) {
                if (k == "priority") {
                  return ReadNumber(f, kNonNegative, &weights.priority);
                }
                if (k == "wait") {
                  return ReadNumber(f, kNonNegative, &weights.wait);
                }
                if (k == "blocking") {
                  return ReadNumber(f, kNonNegative, &weights.blocking);
                }
                return ReadNumber(f, kNonNegative, &weights.fair_share);
              });
        }
        if (key == "default_total_tasks") {
          return ReadInt(child, 1, &scheduling.default_total_tasks);
        }
        if (key == "fair_share_half_life") {
          return ReadDuration(child, false, &scheduling.fair_share_half_life);
        }
        if (key == "preemption_grace") {
          return ReadDuration(child, true, &scheduling.preemption_grace);
        }
        if (key == "default_ttl") {
          return ReadDuration(child, false, &scheduling.default_ttl);
        }
        if (key == "restrict_agent_types") {
          restrict_agent_types_.emplace(child);
          return ReadBool(child, &scheduling.restrict_agent_types);
        }
        return ReadInt(child, 0, &scheduling.history_limit);
      });
}

Status Reader::Finish() {
  if (max_concurrent_total_.has_value()) {
    const auto& [total, total_field] = *max_concurrent_total_;
    if (resources_agents_.has_value() &&
        resources_agents_->first != static_cast<double>(total)) {
      const Field& agents = resources_agents_->second;
      return Error(total_field,
                   std::to_string(total) +
                       " disagrees with resources.agents (" +
                       FormatNumber(resources_agents_->first) + ", at line " +
                       std::to_string(agents.mark.line + 1) + ", column " +
                       std::to_string(agents.mark.column + 1) +
                       "); both set the number of agents running at once, so "
                       "give one of them or make them equal");
    }
    bool found = false;
    for (ResourceSpec& r : config_.resources) {
      if (r.name == "agents") {
        r.capacity = static_cast<double>(total);
        found = true;
      }
    }
    if (!found) {
      config_.resources.push_back(
          ResourceSpec{"agents", static_cast<double>(total), false});
    }
  }
  for (int i = 0; i < kNumLevels; ++i) {
    if (priority_weights_[i].has_value() && !weight_from_levels_[i]) {
      config_.levels[i].weight = *priority_weights_[i];
    }
  }
  if (config_.scheduling.restrict_agent_types &&
      config_.per_type_limits.empty() && restrict_agent_types_.has_value()) {
    return Error(*restrict_agent_types_,
                 "is true but max_concurrent.per_type names no agent types, "
                 "so every request would be refused; list the agent types "
                 "there or set this to false");
  }
  return Status::Ok();
}

}  // namespace

StatusOr<Config> ConfigFromYamlNode(const YAML::Node& node,
                                    const std::string& source) {
  try {
    Reader reader(source);
    return reader.Read(node);
  } catch (const YAML::Exception& e) {
    std::string where = source + ": ";
    if (!e.mark.is_null()) {
      where = source + ":" + std::to_string(e.mark.line + 1) + ":" +
              std::to_string(e.mark.column + 1) + ": ";
    }
    return InvalidRequest(where + e.msg);
  } catch (const std::exception& e) {
    return Internal(source + ": reading the configuration failed: " + e.what());
  } catch (...) {
    return Internal(source + ": reading the configuration failed");
  }
}

}  // namespace qm
