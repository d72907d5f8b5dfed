// The Prometheus exposition of `qm serve`: see metrics.h.
#include "server/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <type_traits>
#include <unordered_set>
#include <utility>

namespace qm::server {
namespace {

// ---- Formatting ----

// Appends `v` as the exposition format spells numbers: integral values
// without exponent or fraction ("42", not "42.0" or "4.2e1"), others in the
// shortest form that reads back to the same double, and "+Inf", "-Inf",
// "NaN".
void AppendDouble(std::string* out, double v) {
  if (std::isnan(v)) {
    out->append("NaN");
    return;
  }
  if (std::isinf(v)) {
    out->append(v > 0 ? "+Inf" : "-Inf");
    return;
  }
  char buf[64];
  std::to_chars_result r;
  // Below 2^53 every integral double is exact as an int64.
  if (v == std::trunc(v) && std::fabs(v) < 9007199254740992.0) {
    r = std::to_chars(buf, buf + sizeof buf, static_cast<int64_t>(v));
  } else {
    // Plain decimals in the usual range ("0.0005", not "5e-04"); the
    // shortest form with an exponent outside it.
    const double a = std::fabs(v);
    r = a >= 1e-4 && a < 1e15
            ? std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed)
            : std::to_chars(buf, buf + sizeof buf, v);
    if (r.ec != std::errc()) {
      r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific,
                        17);
    }
  }
  out->append(buf, r.ptr);
}

template <typename T>
void AppendNumber(std::string* out, T v) {
  if constexpr (std::is_floating_point_v<T>) {
    AppendDouble(out, static_cast<double>(v));
  } else {
    static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>);
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    out->append(buf, r.ptr);
  }
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 when the bytes
// there are not one (overlong forms, surrogates and code points above
// U+10FFFF are invalid, as Go's utf8.ValidString has them).
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // bounds of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  }
  return n;
}

// Appends a label value escaped for the exposition: backslash, double quote
// and newline escaped; bytes that are not valid UTF-8 (Prometheus rejects
// the whole scrape for one) replaced with U+FFFD.
void AppendLabelValue(std::string* out, std::string_view v) {
  for (size_t i = 0; i < v.size();) {
    const char c = v[i];
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '"') {
      out->append("\\\"");
    } else if (c == '\n') {
      out->append("\\n");
    } else {
      const size_t n = Utf8SequenceLength(v, i);
      if (n == 0) {
        out->append("\xEF\xBF\xBD");
        ++i;
        continue;
      }
      out->append(v.substr(i, n));
      i += n;
      continue;
    }
    ++i;
  }
}

// Appends HELP text escaped (backslash and newline only).
void AppendHelp(std::string* out, std::string_view v) {
  for (char c : v) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '\n') {
      out->append("\\n");
    } else {
      out->push_back(c);
    }
  }
}

std::string LowerCodeName(Code code) {
  std::string s(CodeName(code));
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

int LevelIndex(Level level) {
  const int i = static_cast<int>(level);
  return i >= 0 && i < kNumLevels ? i : static_cast<int>(Level::kNormal);
}

double Seconds(Duration d) { return static_cast<double>(d.count()) / 1000.0; }

using Label = std::pair<std::string_view, std::string_view>;
using Labels = std::initializer_list<Label>;

// Writes the exposition family by family. Each Family() call starts a family
// (HELP and TYPE); the samples written after it belong to it, so a family's
// samples are contiguous by construction. A sample whose name and labels
// were already written in the family is dropped (inputs with a repeated
// name cannot produce a duplicate series).
class Exposition {
 public:
  Exposition() { out_.reserve(64 * 1024); }

  void Family(std::string_view name, std::string_view type,
              std::string_view help) {
    seen_.clear();
    out_.append("# HELP ").append(name).push_back(' ');
    AppendHelp(&out_, help);
    out_.append("\n# TYPE ").append(name).push_back(' ');
    out_.append(type).push_back('\n');
  }

  // One sample: `name{labels} value` (`suffix` appended to the name, for
  // histogram lines; `le` an extra last label when not empty).
  template <typename T>
  void Sample(std::string_view name, Labels labels, T value,
              std::string_view suffix = {}, std::string_view le = {}) {
    line_.clear();
    line_.append(name).append(suffix);
    if (labels.size() > 0 || !le.empty()) {
      line_.push_back('{');
      bool first = true;
      for (const Label& l : labels) {
        if (!first) line_.push_back(',');
        first = false;
        line_.append(l.first).append("=\"");
        AppendLabelValue(&line_, l.second);
        line_.push_back('"');
      }
      if (!le.empty()) {
        if (!first) line_.push_back(',');
        line_.append("le=\"").append(le).push_back('"');
      }
      line_.push_back('}');
    }
    if (!seen_.insert(line_).second) return;
    out_.append(line_).push_back(' ');
    AppendNumber(&out_, value);
    out_.push_back('\n');
  }

  // A family of one unlabelled sample.
  template <typename T>
  void Single(std::string_view name, std::string_view type,
              std::string_view help, T value) {
    Family(name, type, help);
    Sample(name, {}, value);
  }

  // The series of one histogram: cumulative `_bucket` lines (le ascending,
  // "+Inf" last and equal to `_count`), `_sum` and `_count`.
  void HistogramSeries(std::string_view name, Labels labels,
                       const Histogram::Data& d) {
    uint64_t cumulative = 0;
    std::string le;
    for (size_t i = 0; i < d.counts.size(); ++i) {
      cumulative += d.counts[i];
      le.clear();
      if (i < d.bounds.size()) {
        AppendDouble(&le, d.bounds[i]);
      } else {
        le = "+Inf";
      }
      Sample(name, labels, cumulative, "_bucket", le);
    }
    Sample(name, labels, d.sum, "_sum");
    // The +Inf bucket and the count are the same figure (Read() keeps them
    // consistent; taking the sum of the buckets makes it certain).
    Sample(name, labels, cumulative, "_count");
  }

  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
  std::string line_;
  std::unordered_set<std::string> seen_;  // series of the current family
};

// The event types known when this was written, for zero-initialised
// qm_events_total series (types added later are counted when they occur).
constexpr int kKnownEventTypes = static_cast<int>(kLastEventType) + 1;

}  // namespace

// ---- Histogram ----

Histogram::Histogram(std::vector<double> bounds) {
  std::vector<double> b;
  b.reserve(bounds.size());
  for (double x : bounds) {
    if (std::isfinite(x)) b.push_back(x);
  }
  std::sort(b.begin(), b.end());
  b.erase(std::unique(b.begin(), b.end()), b.end());
  data_.bounds = std::move(b);
  data_.counts.assign(data_.bounds.size() + 1, 0);
}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  // The first bucket whose upper bound is >= value (bounds are inclusive).
  const size_t i = static_cast<size_t>(
      std::lower_bound(data_.bounds.begin(), data_.bounds.end(), value) -
      data_.bounds.begin());
  std::lock_guard<std::mutex> lock(mu_);
  ++data_.counts[i];
  data_.sum += value;
  ++data_.count;
}

Histogram::Data Histogram::Read() const {
  std::lock_guard<std::mutex> lock(mu_);
  return data_;
}

std::vector<double> DefaultLatencyBounds() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,  0.5,    1,     2.5,  5,     10};
}

std::vector<double> DefaultBatchBounds() {
  return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
}

// ---- ServerMetrics ----

ServerMetrics::ServerMetrics() {
  for (int t = 0; t < kKnownEventTypes; ++t) {
    events_.emplace(EventTypeName(static_cast<EventType>(t)), 0);
  }
}

void ServerMetrics::OnEvent(const Event& event) {
  const int level = LevelIndex(event.level);
  std::lock_guard<std::mutex> lock(mu_);
  const char* type = EventTypeName(event.type);
  auto it = events_.find(std::string_view(type));
  if (it == events_.end()) it = events_.emplace(type, 0).first;
  ++it->second;
  switch (event.type) {
    case EventType::kGranted:
      ++grants_by_level_[level];
      break;
    case EventType::kQueued:
      ++queued_by_level_[level];
      break;
    case EventType::kPreempted: {
      auto p = preemptions_by_product_.find(event.product);
      if (p == preemptions_by_product_.end()) {
        p = preemptions_by_product_.emplace(event.product, 0).first;
      }
      ++p->second;
      break;
    }
    case EventType::kExpired:
      ++expiries_;
      break;
    case EventType::kRequeued:
      ++requeues_;
      break;
    case EventType::kStarvation:
      ++starvation_by_level_[level];
      break;
    default:
      break;
  }
}

void ServerMetrics::OnRefusal(std::string_view operation, Code code) {
  std::pair<std::string, std::string> key(std::string(operation),
                                          LowerCodeName(code));
  std::lock_guard<std::mutex> lock(mu_);
  ++refusals_[std::move(key)];
}

void ServerMetrics::ObserveRequest(std::string_view route,
                                   std::string_view method, int status,
                                   double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = routes_.find(route);
  if (it == routes_.end()) {
    it = routes_.try_emplace(std::string(route)).first;
  }
  RouteStats& r = it->second;
  ++r.requests[std::make_pair(std::string(method), status)];
  r.latency.Observe(seconds);
}

std::string ServerMetrics::Render(const MetricsInputs& in) const {
  Exposition x;
  const Snapshot& s = in.snapshot;
  const CostReport& c = in.costs;

  // ---- Resources ----
  x.Family("qm_resource_capacity", "gauge",
           "Capacity of a resource, in its own unit (agents, cores, GB...).");
  for (const ResourceUsage& r : s.resources) {
    x.Sample("qm_resource_capacity", {{"resource", r.name}}, r.capacity);
  }
  x.Family("qm_resource_allocated", "gauge",
           "Amount of a resource held by active allocations.");
  for (const ResourceUsage& r : s.resources) {
    x.Sample("qm_resource_allocated", {{"resource", r.name}}, r.allocated);
  }
  x.Family("qm_resource_reserved", "gauge",
           "Amount of a resource held back for reservations.");
  for (const ResourceUsage& r : s.resources) {
    x.Sample("qm_resource_reserved", {{"resource", r.name}}, r.reserved);
  }
  x.Family("qm_resource_available", "gauge",
           "Amount of a resource free for new grants.");
  for (const ResourceUsage& r : s.resources) {
    x.Sample("qm_resource_available", {{"resource", r.name}}, r.available);
  }

  // ---- Agent types and products ----
  x.Family("qm_agent_type_running_agents", "gauge",
           "Agents running for an agent type.");
  for (const GroupUsage& g : s.agent_types) {
    x.Sample("qm_agent_type_running_agents", {{"agent_type", g.name}},
             g.running_agents);
  }
  x.Family("qm_agent_type_agent_limit", "gauge",
           "Configured limit on concurrent agents of an agent type (only "
           "types with a limit).");
  for (const GroupUsage& g : s.agent_types) {
    if (g.limit) {
      x.Sample("qm_agent_type_agent_limit", {{"agent_type", g.name}}, *g.limit);
    }
  }
  x.Family("qm_agent_type_queued_requests", "gauge",
           "Requests of an agent type waiting in the queue.");
  for (const GroupUsage& g : s.agent_types) {
    x.Sample("qm_agent_type_queued_requests", {{"agent_type", g.name}},
             g.queued);
  }
  x.Family("qm_product_running_agents", "gauge",
           "Agents running for a product.");
  for (const GroupUsage& g : s.products) {
    x.Sample("qm_product_running_agents", {{"product", g.name}},
             g.running_agents);
  }
  x.Family("qm_product_agent_limit", "gauge",
           "Configured limit on concurrent agents of a product (only products "
           "with a limit).");
  for (const GroupUsage& g : s.products) {
    if (g.limit) {
      x.Sample("qm_product_agent_limit", {{"product", g.name}}, *g.limit);
    }
  }
  x.Family("qm_product_queued_requests", "gauge",
           "Requests of a product waiting in the queue.");
  for (const GroupUsage& g : s.products) {
    x.Sample("qm_product_queued_requests", {{"product", g.name}}, g.queued);
  }
  x.Family("qm_product_fair_share_ratio", "gauge",
           "A product's configured fair share, normalised over all products "
           "(0-1).");
  for (const GroupUsage& g : s.products) {
    x.Sample("qm_product_fair_share_ratio", {{"product", g.name}}, g.share);
  }
  x.Family("qm_product_decayed_usage_agent_seconds", "gauge",
           "A product's decayed usage for fair share, in agent-seconds.");
  for (const GroupUsage& g : s.products) {
    x.Sample("qm_product_decayed_usage_agent_seconds", {{"product", g.name}},
             g.decayed_agent_minutes * 60);
  }

  // ---- Allocations and queue ----
  x.Single("qm_allocations_active", "gauge", "Active allocations.", s.active);
  x.Single("qm_allocations_preempting", "gauge",
           "Active allocations under a preemption notice.", s.preempting);
  x.Family("qm_queue_length", "gauge", "Requests queued, per priority level.");
  for (int l = 0; l < kNumLevels; ++l) {
    x.Sample("qm_queue_length", {{"level", LevelName(static_cast<Level>(l))}},
             s.queued_by_level[l]);
  }
  x.Family("qm_queue_oldest_wait_seconds", "gauge",
           "How long the oldest queued request of a priority level has "
           "waited (0 when none is queued).");
  for (int l = 0; l < kNumLevels; ++l) {
    const auto& w = s.oldest_wait_by_level[l];
    x.Sample("qm_queue_oldest_wait_seconds",
             {{"level", LevelName(static_cast<Level>(l))}},
             w ? Seconds(*w) : 0.0);
  }

  // ---- Health and the machine (docs/monitoring.md) ----
  {
    const Health& h = s.health;
    x.Family("qm_health_status", "gauge",
             "Health per resource and overall: 0 healthy, 1 warning, 2 "
             "critical (resources not measured yet are left out).");
    auto rate = [&](const char* resource, std::optional<HealthStatus> v) {
      if (v)
        x.Sample("qm_health_status", {{"resource", resource}},
                 static_cast<int>(*v));
    };
    rate("overall", h.overall);
    rate("cpu", h.cpu);
    rate("memory", h.memory);
    rate("storage", h.storage);
    rate("agent_pool", h.agent_pool);
    x.Single("qm_memory_pressure", "gauge",
             "1 while memory is under pressure (new requests that ask for "
             "memory_gb are held), else 0.",
             h.memory_pressure ? 1 : 0);
    x.Family("qm_alerts_active", "gauge",
             "Alerts firing now, by type, resource and severity.");
    for (const Alert& a : s.alerts) {
      x.Sample("qm_alerts_active",
               {{"type", a.type},
                {"resource", a.resource},
                {"severity", a.severity}},
               1);
    }
    x.Family("qm_system_utilization_ratio", "gauge",
             "The machine's last reading (0..1): cpu, memory, "
             "memory_pressure (PSI some avg10) and storage; figures not "
             "measured are left out.");
    if (s.system) {
      auto fig = [&](const char* what, const std::optional<double>& v) {
        if (v) x.Sample("qm_system_utilization_ratio", {{"figure", what}}, *v);
      };
      fig("cpu", s.system->cpu_utilization);
      fig("memory", s.system->memory_utilization);
      fig("memory_pressure", s.system->memory_pressure);
      fig("storage", s.system->storage_utilization);
    }
  }

  // ---- The server's counters ----
  {
    std::lock_guard<std::mutex> lock(mu_);
    x.Family("qm_events_total", "counter", "Engine events, by type.");
    for (const auto& [type, n] : events_) {
      x.Sample("qm_events_total", {{"type", type}}, n);
    }
    x.Family("qm_grants_total", "counter",
             "Allocations granted, per priority level.");
    for (int l = 0; l < kNumLevels; ++l) {
      x.Sample("qm_grants_total", {{"level", LevelName(static_cast<Level>(l))}},
               grants_by_level_[l]);
    }
    x.Family("qm_queued_total", "counter",
             "Requests that entered the queue, per priority level.");
    for (int l = 0; l < kNumLevels; ++l) {
      x.Sample("qm_queued_total", {{"level", LevelName(static_cast<Level>(l))}},
               queued_by_level_[l]);
    }
    x.Family("qm_refusals_total", "counter",
             "Refused operations, by operation and reason (the error code).");
    for (const auto& [key, n] : refusals_) {
      x.Sample("qm_refusals_total",
               {{"operation", key.first}, {"reason", key.second}}, n);
    }
    // Every product of the snapshot has a series, zero until preempted.
    x.Family("qm_preemptions_total", "counter",
             "Allocations preempted, per product of the preempted holder.");
    for (const auto& [product, n] : preemptions_by_product_) {
      x.Sample("qm_preemptions_total", {{"product", product}}, n);
    }
    for (const GroupUsage& g : s.products) {
      if (preemptions_by_product_.find(g.name) ==
          preemptions_by_product_.end()) {
        x.Sample("qm_preemptions_total", {{"product", g.name}}, uint64_t{0});
      }
    }
    x.Single("qm_expiries_total", "counter",
             "Allocations expired (lease not renewed in time).", expiries_);
    x.Single("qm_requeues_total", "counter",
             "Preempted allocations put back in the queue.", requeues_);
    x.Family("qm_starvation_total", "counter",
             "Queued requests that waited longer than their level's maximum "
             "wait, per priority level.");
    for (int l = 0; l < kNumLevels; ++l) {
      x.Sample("qm_starvation_total",
               {{"level", LevelName(static_cast<Level>(l))}},
               starvation_by_level_[l]);
    }
  }

  // ---- Spend this budget period ----
  x.Single("qm_tokens_used", "gauge",
           "Tokens reported used in the current budget period.", c.tokens_used);
  x.Single("qm_cost_used_usd", "gauge",
           "Cost reported in the current budget period, in US dollars.",
           c.cost_usd);
  x.Single("qm_tokens_reserved", "gauge",
           "Tokens reserved by admitted work and not yet reported used.",
           c.tokens_reserved);
  x.Single("qm_cost_reserved_usd", "gauge",
           "Cost reserved by admitted work and not yet reported, in US "
           "dollars.",
           c.cost_reserved_usd);
  const auto spend = [&x](const std::vector<SpendLine>& lines,
                          std::string_view label, std::string_view tokens,
                          std::string_view cost, std::string_view what) {
    x.Family(tokens, "gauge",
             std::string("Tokens used in the current budget period, per ")
                 .append(what)
                 .append("."));
    for (const SpendLine& l : lines)
      x.Sample(tokens, {{label, l.name}}, l.tokens);
    x.Family(cost, "gauge",
             std::string("Cost in the current budget period, in US dollars, "
                         "per ")
                 .append(what)
                 .append("."));
    for (const SpendLine& l : lines) {
      x.Sample(cost, {{label, l.name}}, l.cost_usd);
    }
  };
  spend(c.products, "product", "qm_product_tokens_used",
        "qm_product_cost_used_usd", "product");
  spend(c.models, "model", "qm_model_tokens_used", "qm_model_cost_used_usd",
        "model");
  spend(c.agent_types, "agent_type", "qm_agent_type_tokens_used",
        "qm_agent_type_cost_used_usd", "agent type");

  // ---- Budgets: each figure only for the lines with a limit of its kind
  // (a line without a token limit does not track tokens) ----
  const auto budget = [&x, &c](std::string_view name, std::string_view help,
                               auto has, auto value) {
    x.Family(name, "gauge", help);
    for (const BudgetLine& b : c.budgets) {
      if (has(b)) {
        x.Sample(name, {{"scope", b.scope}, {"name", b.name}}, value(b));
      }
    }
  };
  const auto tok = [](const BudgetLine& b) {
    return b.token_limit.has_value();
  };
  const auto usd = [](const BudgetLine& b) {
    return b.cost_limit_usd.has_value();
  };
  budget("qm_budget_limit_tokens", "Token limit of a period budget.", tok,
         [](const BudgetLine& b) { return *b.token_limit; });
  budget("qm_budget_used_tokens",
         "Tokens reported used against a period budget.", tok,
         [](const BudgetLine& b) { return b.tokens_used; });
  budget("qm_budget_reserved_tokens",
         "Tokens reserved against a period budget, not yet reported used.", tok,
         [](const BudgetLine& b) { return b.tokens_reserved; });
  budget("qm_budget_remaining_tokens",
         "Tokens of a period budget left for new reservations (limit - used - "
         "reserved, at least 0).",
         tok, [](const BudgetLine& b) {
           return std::max<int64_t>(
               0, *b.token_limit - b.tokens_used - b.tokens_reserved);
         });
  budget("qm_budget_limit_usd", "Cost limit of a period budget, in US dollars.",
         usd, [](const BudgetLine& b) { return *b.cost_limit_usd; });
  budget("qm_budget_used_usd",
         "Cost reported against a period budget, in US dollars.", usd,
         [](const BudgetLine& b) { return b.cost_used_usd; });
  budget("qm_budget_reserved_usd",
         "Cost reserved against a period budget, not yet reported, in US "
         "dollars.",
         usd, [](const BudgetLine& b) { return b.cost_reserved_usd; });
  budget("qm_budget_remaining_usd",
         "Cost of a period budget left for new reservations (limit - used - "
         "reserved, at least 0), in US dollars.",
         usd, [](const BudgetLine& b) {
           return std::max(
               0.0, *b.cost_limit_usd - b.cost_used_usd - b.cost_reserved_usd);
         });

  // ---- Breaker and pause ----
  x.Single("qm_breaker_open", "gauge",
           "1 when the circuit breaker is open (no new grants), else 0.",
           int{c.breaker.open});
  x.Single("qm_breaker_overridden", "gauge",
           "1 when an operator overrode the breaker for the rest of the "
           "period, else 0.",
           int{c.breaker.overridden});
  x.Single("qm_paused", "gauge", "1 when an operator paused admission, else 0.",
           int{c.paused});

  // ---- HTTP ----
  {
    std::lock_guard<std::mutex> lock(mu_);
    x.Family("qm_http_requests_total", "counter",
             "HTTP requests answered, by route pattern, method and status "
             "code.");
    char code[16];
    for (const auto& [route, r] : routes_) {
      for (const auto& [key, n] : r.requests) {
        const auto end = std::to_chars(code, code + sizeof code, key.second);
        x.Sample("qm_http_requests_total",
                 {{"route", route},
                  {"method", key.first},
                  {"code", std::string_view(code, end.ptr - code)}},
                 n);
      }
    }
    x.Family("qm_http_request_duration_seconds", "histogram",
             "HTTP request latency, by route pattern.");
    for (const auto& [route, r] : routes_) {
      x.HistogramSeries("qm_http_request_duration_seconds", {{"route", route}},
                        r.latency.Read());
    }
  }

  // ---- Journal ----
  const DurableStats& j = in.journal;
  x.Single("qm_journal_operations_total", "counter",
           "Operations journaled since the store was opened.", j.operations);
  x.Single("qm_journal_commits_total", "counter",
           "Journal transactions committed since the store was opened.",
           j.commits);
  x.Single("qm_journal_payload_bytes_total", "counter",
           "Journal payload bytes written since the store was opened.",
           j.payload_bytes);
  x.Single("qm_journal_snapshots_total", "counter",
           "State snapshots written since the store was opened.", j.snapshots);
  x.Single("qm_journal_committed_seq", "gauge",
           "Sequence number of the last journal record committed.",
           j.committed_seq);
  x.Single("qm_journal_applied_seq", "gauge",
           "Sequence number of the last journal record applied to the state.",
           j.last_seq);
  if (in.commit_latency != nullptr) {
    x.Family("qm_journal_commit_duration_seconds", "histogram",
             "Journal commit latency.");
    x.HistogramSeries("qm_journal_commit_duration_seconds", {},
                      in.commit_latency->Read());
  }
  if (in.commit_batch != nullptr) {
    x.Family("qm_journal_commit_batch_size", "histogram",
             "Operations per journal commit (group commit batch size).");
    x.HistogramSeries("qm_journal_commit_batch_size", {},
                      in.commit_batch->Read());
  }

  // ---- Server ----
  x.Single("qm_leader", "gauge",
           "1 when this server leads the store (takes changes), 0 when it "
           "follows.",
           int{in.leader});
  x.Single("qm_uptime_seconds", "gauge", "Seconds since the server started.",
           in.uptime_seconds);
  return x.Take();
}

}  // namespace qm::server
