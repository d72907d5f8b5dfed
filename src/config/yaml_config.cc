#include "config/yaml_config.h"

#include <absl/time/time.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "core/conditions.h"
#include "core/expr.h"
#include "core/text.h"
#include "qm/types.h"

namespace qm {
namespace {

// Largest capacity or per-workflow amount accepted. The engine keeps amounts
// as thousandths in 64-bit integers; this bound keeps every sum of them far
// from overflow.
constexpr double kMaxAmount = 1e12;
constexpr int kMaxResourceNameLength = 64;
// Largest token count and dollar amount of a budget setting: the engine's
// bounds (it keeps tokens and micro-dollars in 64-bit integers).
constexpr int64_t kMaxTokens = 1'000'000'000'000'000;  // 1e15
constexpr double kMaxUsd = 1e9;

// ---- The schema: every mapping whose keys are fixed. ----

// Paths of the fixed-key sections. "<name>" stands for a name the user
// chooses (a resource, a product), "<level>" for a priority level, "[]" for
// any list item.
constexpr std::string_view kRoot = "";
constexpr std::string_view kResourceSpec = "resources.<name>";
constexpr std::string_view kMaxConcurrent = "max_concurrent";
constexpr std::string_view kPricing = "pricing";
constexpr std::string_view kModelPrice = "pricing.models.<name>";
// Reserved keys among the agent types of token_budgets.
constexpr std::string_view kTokenBudgets = "token_budgets";
constexpr std::string_view kPriorityLevels = "priority_levels";
constexpr std::string_view kPriorityLevel = "priority_levels.<level>";
constexpr std::string_view kDailyLimits = "daily_limits";
constexpr std::string_view kPeriodBudget = "daily_limits.per_agent_type.<name>";
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
constexpr std::string_view kConflicts = "conflicts";
constexpr std::string_view kFileLocking = "conflicts.file_locking";
constexpr std::string_view kProductLocking =
    "conflicts.file_locking.per_product.<name>";
constexpr std::string_view kReservations = "reservations";
constexpr std::string_view kMonitoring = "monitoring";
constexpr std::string_view kDegradation = "monitoring.degradation";
// Seed 000's conflict_resolution block, of which only the file-conflict
// strategy means something here (an alias of conflicts.strategy).
constexpr std::string_view kConflictResolution = "conflict_resolution";
constexpr std::string_view kFileConflicts =
    "conflict_resolution.file_conflicts";

// A mapping with fixed keys, in the order the documentation lists them.
struct Section {
  std::string_view path;
  std::vector<std::string> keys;
};

const std::vector<Section>& Sections() {
  static const std::vector<Section>* const kSections = new std::vector<Section>{
      {kRoot,
       {"resources", "max_concurrent", "pricing", "token_budgets",
        "priority_levels", "daily_limits", "products", "auto_model_selection",
        "circuit_breaker", "manual_override", "resource_policies",
        "auto_release", "scheduling", "conflicts", "reservations", "monitoring",
        "conflict_resolution", "server"}},
      {kResourceSpec, {"capacity", "fractional"}},
      {kMaxConcurrent, {"total", "per_type"}},
      {kPricing, {"models", "default_model", "estimate_output_share"}},
      {kModelPrice,
       {"input_per_million", "output_per_million", "cached_input_per_million"}},
      {kTokenBudgets,
       {"default", "multiplier", "use_estimate_when_smaller", "over_budget",
        "learning_rate"}},
      {kPriorityLevels, {"critical", "high", "normal", "medium", "low"}},
      {kPriorityLevel, {"max_wait_time_minutes", "preempt_lower", "weight"}},
      {kDailyLimits,
       {"max_tokens_total", "max_cost_usd", "alert_at_percent", "period",
        "time_zone", "week_start", "per_agent_type"}},
      {kPeriodBudget, {"max_tokens", "max_cost_usd"}},
      {kProduct,
       {"priority", "max_concurrent_agents", "token_budget_daily",
        "cost_budget_daily_usd", "share"}},
      {kAutoModelSelection, {"rules"}},
      {kModelRule, {"condition", "model", "fallback_model"}},
      {kCircuitBreaker,
       {"trip_conditions", "burn_rate_window", "when_tripped"}},
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
      {kConflicts,
       {"workspace_root", "strategy", "history_limit", "file_locking"}},
      {kFileLocking, {"enforcement", "exceptions", "per_product"}},
      {kProductLocking, {"enforcement", "exceptions"}},
      {kReservations,
       {"horizon", "grace_period", "preempt_running", "max_reservations"}},
      {kMonitoring,
       {"warning_threshold", "critical_threshold", "pressure_threshold",
        "gc_trigger_threshold", "psi_threshold", "hysteresis", "degradation"}},
      {kDegradation,
       {"threshold", "min_increase", "window", "baseline", "min_samples"}},
      // Seed 000 keys that are recognised only to be refused with a reason.
      {kConflictResolution,
       {"file_conflicts", "resource_conflicts", "workflow_conflicts"}},
      {kFileConflicts, {"strategy", "methods", "timeout"}},
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

// ---- Positions inside a scalar (condition errors). ----

bool IsBreak(char c) { return c == '\n' || c == '\r'; }
bool IsBlank(char c) { return c == ' ' || c == '\t'; }

// `at`, the mark of byte `from` of `text`, moved forward to byte `to`.
// Columns count bytes, as yaml-cpp's do.
YAML::Mark Advance(YAML::Mark at, std::string_view text, size_t from,
                   size_t to) {
  for (size_t i = from; i < to && i < text.size(); ++i) {
    ++at.pos;
    if (text[i] == '\n') {
      ++at.line;
      at.column = 0;
    } else {
      ++at.column;
    }
  }
  return at;
}

// The length of the run of line breaks and blanks at text[p] (a line
// break), and in `breaks` how many line breaks it holds.
size_t FoldLength(std::string_view text, size_t p, size_t* breaks) {
  const size_t begin = p;
  *breaks = 0;
  while (p < text.size() && IsBreak(text[p])) {
    p += text.compare(p, 2, "\r\n") == 0 ? 2 : 1;
    ++*breaks;
    while (p < text.size() && IsBlank(text[p])) ++p;
  }
  return p - begin;
}

// The escape sequence at text[p] (a backslash inside a double-quoted
// scalar): its length in `raw` and the bytes of UTF-8 it stands for in
// `bytes`. False when it is not a complete escape.
bool EscapeAt(std::string_view text, size_t p, size_t* raw, size_t* bytes) {
  if (p + 1 >= text.size()) return false;
  const char e = text[p + 1];
  const size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
  if (digits == 0) {
    *raw = 2;
    // \N (U+0085) and \_ (U+00A0) take 2 bytes, \L and \P (U+2028/9) 3.
    *bytes = (e == 'N' || e == '_') ? 2 : (e == 'L' || e == 'P') ? 3 : 1;
    return true;
  }
  if (p + 2 + digits > text.size()) return false;
  uint32_t code = 0;
  for (size_t k = 0; k < digits; ++k) {
    const char c = text[p + 2 + k];
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
    code = code * 16 +
           static_cast<uint32_t>(
               std::isdigit(static_cast<unsigned char>(c))
                   ? c - '0'
                   : std::tolower(static_cast<unsigned char>(c)) - 'a' + 10);
  }
  *raw = 2 + digits;
  *bytes = code < 0x80 ? 1 : code < 0x800 ? 2 : code < 0x10000 ? 3 : 4;
  return true;
}

// Where byte `offset` of the value of the flow scalar `node` (plain, single-
// or double-quoted) is written in `text`, the document it was parsed from;
// the start of a block scalar; nullopt when the text does not match the node.
// Walks the source the way a YAML reader decodes it: escapes, '' in single
// quotes, and line folding (a line break and the blanks around it read as
// one space, or as one newline per empty line).
std::optional<YAML::Mark> ExactMarkInScalar(const YAML::Node& node,
                                            size_t offset,
                                            std::string_view text) {
  const YAML::Mark start = node.Mark();
  if (start.pos < 0) return std::nullopt;
  // yaml-cpp counts positions after a UTF-8 byte-order mark.
  const size_t begin = (text.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0) +
                       static_cast<size_t>(start.pos);
  size_t p = begin;
  // The mark is that of the node's properties (tag, anchor) when it has any.
  while (p < text.size() && (text[p] == '!' || text[p] == '&')) {
    while (p < text.size() && !IsBlank(text[p]) && !IsBreak(text[p])) ++p;
    while (p < text.size() && (IsBlank(text[p]) || IsBreak(text[p]))) ++p;
  }
  if (p >= text.size()) return std::nullopt;
  if (text[p] == '|' || text[p] == '>') return start;
  const std::string& value = node.Scalar();
  const char quote = text[p] == '"' || text[p] == '\'' ? text[p] : '\0';
  if (quote == '\0' && (value.empty() || text[p] != value[0])) {
    return std::nullopt;
  }
  if (quote != '\0') ++p;
  std::optional<YAML::Mark> found;
  size_t decoded = 0;  // bytes of the value before text[p]
  while (p < text.size()) {
    const char c = text[p];
    size_t raw = 1, bytes = 1, breaks = 0;
    if (quote != '\0' && c == quote) {
      if (quote == '"' || text.compare(p, 2, "''") != 0) break;
      raw = 2;  // '' is one quote
    } else if (quote == '"' && c == '\\' && p + 1 < text.size() &&
               IsBreak(text[p + 1])) {
      // An escaped line break: only the empty lines after it remain.
      raw = 1 + FoldLength(text, p + 1, &breaks);
      bytes = breaks - 1;
    } else if (quote == '"' && c == '\\') {
      if (!EscapeAt(text, p, &raw, &bytes)) return std::nullopt;
    } else if (IsBlank(c) || IsBreak(c)) {
      size_t q = p;
      while (q < text.size() && IsBlank(text[q])) ++q;
      if (q < text.size() && IsBreak(text[q])) {
        raw = q - p + FoldLength(text, q, &breaks);
        bytes = breaks == 1 ? 1 : breaks - 1;
      }
    }
    if (!found.has_value() && offset < decoded + bytes) {
      found = Advance(start, text, begin, p);
      // A plain scalar's end is not marked: stop at the offset.
      if (quote == '\0') return found;
    }
    decoded += bytes;
    p += raw;
  }
  if (quote == '\0') return std::nullopt;
  // At the closing quote: check that the walk decoded the whole value.
  if (p >= text.size() || decoded != value.size()) return std::nullopt;
  if (!found.has_value()) found = Advance(start, text, begin, p);
  return found;
}

// Where byte `offset` of the scalar `node`'s value is in the document `text`
// it was parsed from (see ConfigFromYamlNode). Without the text, or when the
// text does not match, a one-line scalar without escapes is assumed: plain
// when yaml-cpp tags it "?", quoted when it tags it "!" and the value holds
// no line break (a literal block's does); else the node's own mark.
YAML::Mark MarkInScalar(const YAML::Node& node, size_t offset,
                        std::string_view text) {
  YAML::Mark at = node.Mark();
  if (at.is_null()) return at;
  if (!text.empty()) {
    const std::optional<YAML::Mark> exact =
        ExactMarkInScalar(node, offset, text);
    if (exact.has_value()) return *exact;
  }
  const std::string& value = node.Scalar();
  const int shift = static_cast<int>(std::min(offset, value.size()));
  if (node.Tag() == "?") {
    at.column += shift;
  } else if (node.Tag() == "!" &&
             value.find_first_of("\r\n") == std::string::npos) {
    at.column += 1 + shift;
  }
  return at;
}

// ---- Time zones. ----

// Whether `name` looks like an IANA zone name ("UTC", "Europe/Berlin",
// "Etc/GMT+1", "America/Port-au-Prince"): no absolute paths, no "..", and
// not "localtime", which would make the budget calendar follow the host.
bool IsZoneName(std::string_view name) {
  if (name.empty() || name.size() > 64 || name[0] == '/' ||
      name.back() == '/' || name == "localtime") {
    return false;
  }
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '/' && c != '_' &&
        c != '-' && c != '+') {
      return false;
    }
  }
  return name.find("//") == std::string_view::npos;
}

// The zone names of the tz database that absl reads ($TZDIR, else
// /usr/share/zoneinfo), sorted, for "did you mean" suggestions. Empty when
// the directory cannot be listed.
std::vector<std::string> TimeZoneNames() {
  namespace fs = std::filesystem;
  const char* env = std::getenv("TZDIR");
  const fs::path root =
      env != nullptr && *env != '\0' ? env : "/usr/share/zoneinfo";
  std::vector<std::string> names;
  std::error_code ec;
  fs::recursive_directory_iterator it(
      root, fs::directory_options::skip_permission_denied, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().lexically_relative(root).string();
    std::error_code type_ec;
    if (it->is_directory(type_ec)) {
      // Duplicate trees of the same zones.
      if (name == "posix" || name == "right") it.disable_recursion_pending();
      continue;
    }
    if (IsZoneName(name) && std::isupper(static_cast<unsigned char>(name[0]))) {
      names.push_back(name);
    }
    if (names.size() >= 10000) break;
  }
  std::sort(names.begin(), names.end());
  return names;
}

// ---- Choices. ----

bool EqualIgnoringCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// The choice nearest to `text`: a plausible typo, else the only choice that
// `text` (2 characters or more) begins ("mon" -> "monday"); "" when none.
std::string NearestChoice(const std::string& text,
                          const std::vector<std::string>& choices) {
  const std::string near = ClosestMatch(text, choices);
  if (!near.empty() || text.size() < 2) return near;
  std::string only;
  for (const std::string& choice : choices) {
    if (choice.size() > text.size() &&
        EqualIgnoringCase(std::string_view(choice).substr(0, text.size()),
                          text)) {
      if (!only.empty()) return "";
      only = choice;
    }
  }
  return only;
}

const std::vector<std::string>& Weekdays() {
  static const std::vector<std::string>* const kDays =
      new std::vector<std::string>{"sunday",   "monday", "tuesday", "wednesday",
                                   "thursday", "friday", "saturday"};
  return *kDays;
}

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
  // `text`: the document the node was parsed from, or ""; `base_dir`: what
  // a relative workspace root is relative to, or "" (see
  // ConfigFromYamlNode).
  Reader(const std::string& source, std::string_view text,
         const std::string& base_dir)
      : source_(source),
        text_(text),
        base_dir_(base_dir),
        config_(Config::Defaults()) {}

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
  Status ReadOptionalNumber(const Field& field, const Range& range,
                            std::optional<double>* out) const;
  // A token count: a whole number from 0 to kMaxTokens.
  Status ReadTokens(const Field& field, int64_t* out) const;
  Status ReadOptionalTokens(const Field& field,
                            std::optional<int64_t>* out) const;
  // Dollars of a budget: a number from 0 to kMaxUsd, or null.
  Status ReadOptionalUsd(const Field& field, std::optional<double>* out) const;
  // A resource amount: >= 0, at most kMaxAmount, whole thousandths.
  Status ReadAmount(const Field& field, double* out) const;
  Status ReadOptionalAmount(const Field& field,
                            std::optional<double>* out) const;
  Status ReadBool(const Field& field, bool* out) const;
  Status ReadString(const Field& field, bool allow_empty,
                    std::string* out) const;
  Status ReadDuration(const Field& field, bool allow_zero, Duration* out) const;
  Status ReadLevel(const Field& field, Level* out) const;
  // One of `choices`, exactly or (with `ignore_case`) without regard to
  // ASCII case; `*index` is its position in `choices`.
  Status ReadChoice(const Field& field, const std::vector<std::string>& choices,
                    bool ignore_case, size_t* index) const;
  // An IANA time zone name that absl::LoadTimeZone accepts.
  Status ReadTimeZone(const Field& field, std::string* out) const;
  // Compiles the condition `field` against `schema`; an error points at the
  // offending character. `*is_default` says whether it is "default".
  Status ReadCondition(const Field& field, const expr::Schema& schema,
                       std::string* out, bool* is_default) const;
  // A model name: "" for null. Non-empty names are checked against
  // pricing.models in Finish().
  Status ReadModel(const Field& field, bool allow_empty, std::string* out);
  // A key naming a level in priority_levels or priority_weights; refuses
  // "medium" and "normal" both in one mapping.
  Status LevelKey(const std::string& key, const Field& field,
                  std::array<std::optional<YAML::Mark>, kNumLevels>* seen,
                  Level* level) const;

  // Sections.
  Status ReadResources(const Field& field);
  Status ReadMaxConcurrent(const Field& field);
  Status ReadPricing(const Field& field);
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
  Status ReadConflicts(const Field& field);
  Status ReadWorkspaceRoot(const Field& field);
  // A file-locking policy (conflicts.file_locking or one of its per_product
  // entries, `section` says which); `*given` collects the keys it sets.
  Status ReadLockPolicy(const Field& field, std::string_view section,
                        LockPolicy* policy, std::vector<std::string>* given);
  Status ReadStrategy(const Field& field, ConflictStrategy* out) const;
  Status ReadConflictResolution(const Field& field);
  Status ReadReservations(const Field& field);
  Status ReadMonitoring(const Field& field);
  // Cross-key rules and settings that depend on more than one key.
  Status Finish();
  Status FinishConflicts();

  const std::string source_;
  const std::string_view text_;
  const std::string base_dir_;
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
  // Every non-empty model name given (pricing.default_model, the rules'
  // model and fallback_model), in file order, checked in Finish().
  std::vector<std::pair<std::string, Field>> models_named_;
  // conflicts.strategy and its seed 000 alias, checked against each other
  // in Finish().
  std::optional<std::pair<ConflictStrategy, Field>> strategy_, alias_strategy_;
  // The keys each per-product lock policy sets; Finish() fills in the rest
  // from the global policy.
  std::map<std::string, std::vector<std::string>> product_policy_keys_;
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

Status Reader::ReadTokens(const Field& field, int64_t* out) const {
  int64_t value;
  QM_RETURN_IF_ERROR(ReadInt(field, 0, &value));
  if (value > kMaxTokens) {
    return Error(field, "must be at most " + std::to_string(kMaxTokens) + ", " +
                            Got(field.node));
  }
  *out = value;
  return Status::Ok();
}

Status Reader::ReadOptionalTokens(const Field& field,
                                  std::optional<int64_t>* out) const {
  if (field.node.IsNull()) {
    out->reset();
    return Status::Ok();
  }
  int64_t value;
  QM_RETURN_IF_ERROR(ReadTokens(field, &value));
  *out = value;
  return Status::Ok();
}

Status Reader::ReadOptionalUsd(const Field& field,
                               std::optional<double>* out) const {
  QM_RETURN_IF_ERROR(ReadOptionalNumber(field, kNonNegative, out));
  if (out->has_value() && **out > kMaxUsd) {
    return Error(field, "must be at most " + FormatNumber(kMaxUsd) + ", " +
                            Got(field.node));
  }
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

Status Reader::ReadOptionalNumber(const Field& field, const Range& range,
                                  std::optional<double>* out) const {
  if (field.node.IsNull()) {
    out->reset();
    return Status::Ok();
  }
  double value;
  QM_RETURN_IF_ERROR(ReadNumber(field, range, &value));
  *out = value;
  return Status::Ok();
}

Status Reader::ReadChoice(const Field& field,
                          const std::vector<std::string>& choices,
                          bool ignore_case, size_t* index) const {
  const YAML::Node& node = field.node;
  if (node.IsScalar()) {
    for (size_t i = 0; i < choices.size(); ++i) {
      if (ignore_case ? EqualIgnoringCase(node.Scalar(), choices[i])
                      : node.Scalar() == choices[i]) {
        *index = i;
        return Status::Ok();
      }
    }
  }
  std::string what = "must be ";
  if (choices.size() == 2) {
    what += choices[0] + " or " + choices[1];
  } else {
    what += "one of " + Join(choices, ", ");
  }
  what += ", " + Got(node);
  if (node.IsScalar()) {
    const std::string near = NearestChoice(node.Scalar(), choices);
    if (!near.empty()) what += ", did you mean " + Quote(near) + "?";
  }
  return Error(field, what);
}

Status Reader::ReadTimeZone(const Field& field, std::string* out) const {
  std::string name;
  QM_RETURN_IF_ERROR(ReadString(field, false, &name));
  absl::TimeZone zone;
  if (IsZoneName(name) && absl::LoadTimeZone(name, &zone)) {
    *out = name;
    return Status::Ok();
  }
  const std::vector<std::string> known = TimeZoneNames();
  const std::string near = ClosestMatch(name, known);
  if (!near.empty()) {
    return Error(field, "unknown time zone " + Quote(name) + ", did you mean " +
                            Quote(near) + "?");
  }
  if (known.empty() && name != "UTC") {
    return Error(field, "unknown time zone " + Quote(name) +
                            " (no time zone database found: install tzdata "
                            "or set TZDIR; only \"UTC\" works without it)");
  }
  return Error(field, "unknown time zone " + Quote(name) +
                          " (give an IANA name such as \"UTC\" or "
                          "\"Europe/Berlin\")");
}

Status Reader::ReadCondition(const Field& field, const expr::Schema& schema,
                             std::string* out, bool* is_default) const {
  QM_RETURN_IF_ERROR(ReadString(field, false, out));
  expr::CompileError error;
  StatusOr<expr::Condition> condition =
      expr::Condition::Compile(*out, schema, &error);
  if (condition.ok()) {
    *is_default = condition->is_default();
    return Status::Ok();
  }
  const YAML::Mark at = MarkInScalar(field.node, error.offset, text_);
  return InvalidRequest(
      Where(at) + field.path + ": " +
      (error.message.empty() ? condition.status().message() : error.message));
}

Status Reader::ReadModel(const Field& field, bool allow_empty,
                         std::string* out) {
  if (field.node.IsNull() && allow_empty) {
    out->clear();
    return Status::Ok();
  }
  QM_RETURN_IF_ERROR(ReadString(field, allow_empty, out));
  if (!out->empty()) models_named_.emplace_back(*out, field);
  return Status::Ok();
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
        // Read by `qm serve` itself (src/server/server_config.h), not part
        // of the engine's config.
        if (key == "server") return Status::Ok();
        if (key == "resources") return ReadResources(child);
        if (key == "max_concurrent") return ReadMaxConcurrent(child);
        if (key == "pricing") return ReadPricing(child);
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
        if (key == "scheduling") return ReadScheduling(child);
        if (key == "conflicts") return ReadConflicts(child);
        if (key == "reservations") return ReadReservations(child);
        if (key == "monitoring") return ReadMonitoring(child);
        return ReadConflictResolution(child);
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

Status Reader::ReadPricing(const Field& field) {
  PricingConfig& pricing = config_.pricing;
  return ForEachKnownEntry(
      field, kPricing, [&](const std::string& key, const Field& child) {
        if (key == "models") {
          pricing.models.clear();
          return ForEachEntry(child, [&](const std::string& name,
                                         const Field& model) {
            if (!model.node.IsMap()) {
              return Error(model,
                           "must be a mapping {input_per_million: N, "
                           "output_per_million: N, "
                           "cached_input_per_million: N}, " +
                               Got(model.node));
            }
            ModelPrice price;
            bool has_input = false;
            QM_RETURN_IF_ERROR(ForEachKnownEntry(
                model, kModelPrice, [&](const std::string& k, const Field& f) {
                  if (k == "input_per_million") {
                    has_input = true;
                    return ReadNumber(f, kNonNegative,
                                      &price.input_per_million);
                  }
                  if (k == "output_per_million") {
                    return ReadOptionalNumber(f, kNonNegative,
                                              &price.output_per_million);
                  }
                  return ReadOptionalNumber(f, kNonNegative,
                                            &price.cached_input_per_million);
                }));
            if (!has_input) {
              return Error(model, "missing key \"input_per_million\"");
            }
            pricing.models[name] = price;
            return Status::Ok();
          });
        }
        if (key == "default_model") {
          return ReadModel(child, true, &pricing.default_model);
        }
        return ReadNumber(child, kFraction, &pricing.estimate_output_share);
      });
}

Status Reader::ReadTokenBudgets(const Field& field) {
  TokenBudgetsConfig& budgets = config_.token_budgets;
  return ForEachEntry(field, [&](const std::string& key, const Field& child) {
    if (key == "default") {
      return ReadOptionalTokens(child, &budgets.default_budget);
    }
    if (key == "multiplier") {
      return ReadNumber(child, Range{1}, &budgets.multiplier);
    }
    if (key == "use_estimate_when_smaller") {
      return ReadBool(child, &budgets.use_estimate_when_smaller);
    }
    if (key == "over_budget") {
      size_t index;
      QM_RETURN_IF_ERROR(ReadChoice(child, {"flag", "stop"}, false, &index));
      budgets.over_budget =
          index == 0 ? OverBudgetPolicy::kFlag : OverBudgetPolicy::kStop;
      return Status::Ok();
    }
    if (key == "learning_rate") {
      return ReadNumber(child, Range{0, true, 1}, &budgets.learning_rate);
    }
    // An agent type. One a typo away from a reserved key is taken for that
    // typo rather than silently budgeted.
    for (const std::string& reserved : KeysOf(kTokenBudgets)) {
      if (EditDistance(key, reserved) <= 1) {
        return Error(child, "unknown key, did you mean " + Quote(reserved) +
                                "? (agent types this close to a reserved "
                                "key are refused)");
      }
    }
    return ReadTokens(child, &budgets.per_type[key]);
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
          return ReadOptionalTokens(child, &limits.max_tokens_total);
        }
        if (key == "max_cost_usd") {
          return ReadOptionalUsd(child, &limits.max_cost_usd);
        }
        if (key == "period") {
          size_t index;
          QM_RETURN_IF_ERROR(
              ReadChoice(child, {"daily", "weekly", "monthly"}, false, &index));
          limits.period = static_cast<BudgetPeriod>(index);
          return Status::Ok();
        }
        if (key == "time_zone") return ReadTimeZone(child, &limits.time_zone);
        if (key == "week_start") {
          size_t index;
          QM_RETURN_IF_ERROR(ReadChoice(child, Weekdays(), true, &index));
          limits.week_start = static_cast<int>(index);
          return Status::Ok();
        }
        if (key == "per_agent_type") {
          limits.per_agent_type.clear();
          return ForEachEntry(
              child, [&](const std::string& type, const Field& entry) {
                PeriodBudget& budget = limits.per_agent_type[type];
                return ForEachKnownEntry(
                    entry, kPeriodBudget,
                    [&](const std::string& k, const Field& f) {
                      if (k == "max_tokens") {
                        return ReadOptionalTokens(f, &budget.max_tokens);
                      }
                      return ReadOptionalUsd(f, &budget.max_cost_usd);
                    });
              });
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
            return ReadOptionalTokens(f, &product.token_budget_daily);
          }
          if (key == "cost_budget_daily_usd") {
            return ReadOptionalUsd(f, &product.cost_budget_daily_usd);
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
                  bool is_default;
                  return ReadCondition(f, TaskSchema(), &rule.condition,
                                       &is_default);
                }
                if (key == "fallback_model") {
                  return ReadModel(f, true, &rule.fallback_model);
                }
                has_model = true;
                return ReadModel(f, false, &rule.model);
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
            bool is_default;
            QM_RETURN_IF_ERROR(
                ReadCondition(item, BreakerSchema(), &condition, &is_default));
            if (is_default) {
              return Error(item,
                           "\"default\" is for auto_model_selection rules; a "
                           "trip condition compares spend, e.g. "
                           "\"cost_daily_usd > daily_limits.max_cost_usd\"");
            }
            breaker.trip_conditions.push_back(condition);
            return Status::Ok();
          });
        }
        if (key == "burn_rate_window") {
          return ReadDuration(child, false, &breaker.burn_rate_window);
        }
        return ForEachKnownEntry(
            child, kWhenTripped, [&](const std::string& k, const Field& f) {
              if (k == "notify") return ReadString(f, true, &breaker.notify);
              if (k == "allow_override") {
                return ReadBool(f, &breaker.allow_override);
              }
              const std::vector<std::string> actions = {
                  "pause_all", "pause_new_low_priority"};
              size_t index;
              QM_RETURN_IF_ERROR(ReadChoice(f, actions, false, &index));
              breaker.action = actions[index];
              return Status::Ok();
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

Status Reader::ReadConflicts(const Field& field) {
  ConflictsConfig& conflicts = config_.conflicts;
  return ForEachKnownEntry(
      field, kConflicts, [&](const std::string& key, const Field& child) {
        if (key == "workspace_root") return ReadWorkspaceRoot(child);
        if (key == "strategy") {
          QM_RETURN_IF_ERROR(ReadStrategy(child, &conflicts.strategy));
          strategy_.emplace(conflicts.strategy, child);
          return Status::Ok();
        }
        if (key == "history_limit") {
          return ReadInt(child, 0, &conflicts.history_limit);
        }
        std::vector<std::string> given;
        return ReadLockPolicy(child, kFileLocking, &conflicts.file_locking,
                              &given);
      });
}

Status Reader::ReadWorkspaceRoot(const Field& field) {
  std::string root;
  if (!field.node.IsNull()) QM_RETURN_IF_ERROR(ReadString(field, true, &root));
  if (root.empty()) {
    config_.conflicts.workspace_root.clear();
    return Status::Ok();
  }
  if (root.find('\0') != std::string::npos) {
    return Error(field, "must not contain a NUL byte");
  }
  if (root.size() > kMaxPathBytes) {
    return Error(field, "must be at most " + std::to_string(kMaxPathBytes) +
                            " bytes long, got " + std::to_string(root.size()));
  }
  if (root[0] == '~') {
    return Error(field,
                 "\"~\" is not expanded; give an absolute path or one "
                 "relative to the config file's directory, " +
                     Got(field.node));
  }
  std::filesystem::path path(root);
  if (path.is_relative()) {
    if (base_dir_.empty()) {
      return Error(field,
                   "is a relative path, but this configuration has no file "
                   "whose directory it could be relative to; give an "
                   "absolute path, " +
                       Got(field.node));
    }
    std::filesystem::path base(base_dir_);
    std::error_code ec;
    if (base.is_relative()) base = std::filesystem::absolute(base, ec);
    if (ec) {
      return Error(field, "cannot resolve it against " + Quote(base_dir_) +
                              ": " + ec.message());
    }
    path = base / path;
  }
  std::string normal = path.lexically_normal().string();
  while (normal.size() > 1 && normal.back() == '/') normal.pop_back();
  if (normal.size() > kMaxPathBytes) {
    return Error(field, "resolves to a path longer than " +
                            std::to_string(kMaxPathBytes) + " bytes");
  }
  config_.conflicts.workspace_root = normal;
  return Status::Ok();
}

Status Reader::ReadLockPolicy(const Field& field, std::string_view section,
                              LockPolicy* policy,
                              std::vector<std::string>* given) {
  return ForEachKnownEntry(
      field, section, [&](const std::string& key, const Field& child) {
        if (key == "per_product") {
          config_.conflicts.per_product.clear();
          product_policy_keys_.clear();
          return ForEachEntry(
              child, [&](const std::string& product, const Field& entry) {
                std::vector<std::string>& keys = product_policy_keys_[product];
                return ReadLockPolicy(entry, kProductLocking,
                                      &config_.conflicts.per_product[product],
                                      &keys);
              });
        }
        given->push_back(key);
        if (key == "enforcement") {
          const std::vector<std::string> names = {"strict", "advisory"};
          size_t index;
          QM_RETURN_IF_ERROR(ReadChoice(child, names, false, &index));
          LockEnforcementFromName(names[index], &policy->enforcement);
          return Status::Ok();
        }
        static const std::vector<std::string>* const kExceptions =
            new std::vector<std::string>{"read_only_operations"};
        policy->exceptions.clear();
        return ForEachItem(child, [&](const Field& item) {
          std::string name;
          QM_RETURN_IF_ERROR(ReadString(item, false, &name));
          if (std::find(kExceptions->begin(), kExceptions->end(), name) ==
              kExceptions->end()) {
            std::string what = "unknown exception " + Quote(name);
            const std::string near = NearestChoice(name, *kExceptions);
            if (!near.empty()) what += ", did you mean " + Quote(near) + "?";
            return Error(item, what + " (the one exception known is " +
                                   Join(*kExceptions, ", ") + ")");
          }
          if (std::find(policy->exceptions.begin(), policy->exceptions.end(),
                        name) == policy->exceptions.end()) {
            policy->exceptions.push_back(name);
          }
          return Status::Ok();
        });
      });
}

Status Reader::ReadStrategy(const Field& field, ConflictStrategy* out) const {
  const std::vector<std::string> names = {"queue_and_serialize",
                                          "priority_based"};
  const YAML::Node& node = field.node;
  if (node.IsScalar() && (node.Scalar() == "intelligent_queuing" ||
                          node.Scalar() == "coordination_based")) {
    return Error(field, "must be queue_and_serialize or priority_based, " +
                            Got(node) +
                            " (seed 000's strategy for resource and workflow "
                            "conflicts; it does not apply to file locks)");
  }
  size_t index;
  QM_RETURN_IF_ERROR(ReadChoice(field, names, false, &index));
  ConflictStrategyFromName(names[index], out);
  return Status::Ok();
}

Status Reader::ReadConflictResolution(const Field& field) {
  return ForEachKnownEntry(
      field, kConflictResolution,
      [&](const std::string& key, const Field& child) {
        if (key == "resource_conflicts") {
          return Error(child,
                       "is not supported: a request that does not fit queues "
                       "by score and preempts only as "
                       "priority_levels.<level>.preempt_lower allows (see "
                       "scheduling)");
        }
        if (key == "workflow_conflicts") {
          return Error(child,
                       "is not supported: list the workflows a request must "
                       "not run beside in its conflict_avoidance instead");
        }
        return ForEachKnownEntry(
            child, kFileConflicts, [&](const std::string& k, const Field& f) {
              if (k != "strategy") {
                return Error(f,
                             "is not supported: only strategy is read here "
                             "(another name for conflicts.strategy)");
              }
              ConflictStrategy strategy;
              QM_RETURN_IF_ERROR(ReadStrategy(f, &strategy));
              alias_strategy_.emplace(strategy, f);
              return Status::Ok();
            });
      });
}

Status Reader::ReadReservations(const Field& field) {
  ReservationsConfig& reservations = config_.reservations;
  return ForEachKnownEntry(
      field, kReservations, [&](const std::string& key, const Field& child) {
        if (key == "horizon") {
          return ReadDuration(child, false, &reservations.horizon);
        }
        if (key == "grace_period") {
          return ReadDuration(child, true, &reservations.grace_period);
        }
        if (key == "preempt_running") {
          return ReadBool(child, &reservations.preempt_running);
        }
        return ReadInt(child, 1, &reservations.max_reservations);
      });
}

Status Reader::ReadMonitoring(const Field& field) {
  MonitoringConfig& m = config_.monitoring;
  QM_RETURN_IF_ERROR(ForEachKnownEntry(
      field, kMonitoring, [&](const std::string& key, const Field& child) {
        if (key == "hysteresis") {
          return ReadNumber(child, Range{0, false, 0.5}, &m.hysteresis);
        }
        if (key == "degradation") {
          MonitoringConfig::Degradation& d = m.degradation;
          return ForEachKnownEntry(
              child, kDegradation,
              [&](const std::string& k, const Field& f) -> Status {
                if (k == "threshold") {
                  return ReadNumber(f, Range{0, true, 100}, &d.threshold);
                }
                if (k == "min_increase") {
                  return ReadDuration(f, true, &d.min_increase);
                }
                if (k == "window") return ReadDuration(f, false, &d.window);
                if (k == "baseline") {
                  return ReadDuration(f, false, &d.baseline);
                }
                return ReadInt(f, 1, &d.min_samples);
              });
        }
        double* target = key == "warning_threshold"    ? &m.warning_threshold
                         : key == "critical_threshold" ? &m.critical_threshold
                         : key == "pressure_threshold" ? &m.pressure_threshold
                         : key == "gc_trigger_threshold"
                             ? &m.gc_trigger_threshold
                             : &m.psi_threshold;
        return ReadNumber(child, Range{0, true, 1}, target);
      }));
  // The ranges and orders the engine checks, reported at the section.
  if (Status s = ValidateMonitoringConfig(m); !s.ok()) {
    std::string what = s.message();
    if (what.rfind("monitoring.", 0) == 0) what = what.substr(11);
    return Error(field, what);
  }
  return Status::Ok();
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
  // Every model named must have a price once any model has one.
  const std::map<std::string, ModelPrice>& models = config_.pricing.models;
  if (!models.empty()) {
    std::vector<std::string> priced;
    for (const auto& [name, price] : models) priced.push_back(name);
    for (const auto& [name, field] : models_named_) {
      if (models.count(name) != 0) continue;
      const std::string near = ClosestMatch(name, priced);
      if (!near.empty()) {
        return Error(field, "unknown model " + Quote(name) +
                                " (not in pricing.models), did you mean " +
                                Quote(near) + "?");
      }
      return Error(field, "unknown model " + Quote(name) +
                              " (pricing.models has " + Join(priced, ", ") +
                              ")");
    }
  }
  QM_RETURN_IF_ERROR(FinishConflicts());
  return Status::Ok();
}

Status Reader::FinishConflicts() {
  if (alias_strategy_.has_value()) {
    const auto& [alias, alias_field] = *alias_strategy_;
    if (strategy_.has_value() && strategy_->first != alias) {
      const Field& own = strategy_->second;
      return Error(alias_field,
                   std::string(ConflictStrategyName(alias)) +
                       " disagrees with conflicts.strategy (" +
                       ConflictStrategyName(strategy_->first) + ", at line " +
                       std::to_string(own.mark.line + 1) + ", column " +
                       std::to_string(own.mark.column + 1) +
                       "); both set the file-conflict strategy, so give one "
                       "of them or make them equal");
    }
    config_.conflicts.strategy = alias;
  }
  // A product's policy takes the keys it leaves out from the global one.
  const LockPolicy& global = config_.conflicts.file_locking;
  for (auto& [product, policy] : config_.conflicts.per_product) {
    const std::vector<std::string>& given = product_policy_keys_[product];
    auto has = [&](const char* key) {
      return std::find(given.begin(), given.end(), key) != given.end();
    };
    if (!has("enforcement")) policy.enforcement = global.enforcement;
    if (!has("exceptions")) policy.exceptions = global.exceptions;
  }
  return Status::Ok();
}

}  // namespace

const char* WeekdayName(int day) {
  if (day < 0 || day >= static_cast<int>(Weekdays().size())) return "";
  return Weekdays()[day].c_str();
}

StatusOr<Config> ConfigFromYamlNode(const YAML::Node& node,
                                    const std::string& source,
                                    std::string_view text,
                                    const std::string& base_dir) {
  try {
    Reader reader(source, text, base_dir);
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
