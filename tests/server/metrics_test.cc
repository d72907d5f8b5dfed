// Tests of the Prometheus exposition (src/server/metrics.h): values, the
// format's structure (HELP/TYPE once, families contiguous, no duplicate
// series, cumulative histograms), label escaping, promtool's verdict, and
// updates concurrent with scrapes.
#include "server/metrics.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace qm::server {
namespace {

// ---- A small parser of the text format ----

struct Sample {
  std::string name;
  // Label pairs as written (values unescaped), in order.
  std::vector<std::pair<std::string, std::string>> labels;
  std::string value_text;
  double value = 0;
};

struct Parsed {
  // "name{labels}" exactly as written -> value.
  std::map<std::string, double> values;
  std::vector<Sample> samples;
  // Per sample (same index): the family it belongs to.
  std::vector<std::string> family_of;
  std::map<std::string, std::string> types;  // family -> TYPE
  std::vector<std::string> errors;
};

// Unescapes a label value; false on a bad escape.
bool Unescape(const std::string& in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '\\') {
      out->push_back(in[i]);
      continue;
    }
    if (++i == in.size()) return false;
    if (in[i] == '\\') {
      out->push_back('\\');
    } else if (in[i] == '"') {
      out->push_back('"');
    } else if (in[i] == 'n') {
      out->push_back('\n');
    } else {
      return false;
    }
  }
  return true;
}

// Parses `text`, recording structural errors: a HELP or TYPE line repeated,
// a sample before its family's TYPE or outside its family's block, a family
// resumed after another started, a duplicate series.
Parsed Parse(const std::string& text) {
  Parsed p;
  std::istringstream in(text);
  std::string line;
  std::string current;  // family of the last TYPE line
  std::set<std::string> helped, typed, closed;
  std::set<std::string> series;
  if (!text.empty() && text.back() != '\n') {
    p.errors.push_back("output does not end with a newline");
  }
  while (std::getline(in, line)) {
    if (line.empty()) {
      p.errors.push_back("empty line");
      continue;
    }
    if (line[0] == '#') {
      std::istringstream ls(line);
      std::string hash, kind, name;
      ls >> hash >> kind >> name;
      if (kind == "HELP") {
        if (!helped.insert(name).second) {
          p.errors.push_back("second HELP for " + name);
        }
        if (typed.count(name)) {
          p.errors.push_back("HELP after TYPE for " + name);
        }
        if (name != current) {
          if (!current.empty()) closed.insert(current);
          if (closed.count(name)) p.errors.push_back("family resumed: " + name);
          current = name;
        }
      } else if (kind == "TYPE") {
        std::string type;
        ls >> type;
        if (!typed.insert(name).second) {
          p.errors.push_back("second TYPE for " + name);
        }
        if (!helped.count(name))
          p.errors.push_back("TYPE before HELP: " + name);
        if (name != current) p.errors.push_back("TYPE out of place: " + name);
        p.types[name] = type;
      } else {
        p.errors.push_back("unknown comment: " + line);
      }
      continue;
    }
    Sample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    s.name = line.substr(0, i);
    std::string key = s.name;
    if (i < line.size() && line[i] == '{') {
      const size_t start = i;
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t eq = line.find('=', i);
        if (eq == std::string::npos || eq + 1 >= line.size() ||
            line[eq + 1] != '"') {
          p.errors.push_back("bad labels: " + line);
          break;
        }
        std::string lname = line.substr(i, eq - i);
        size_t j = eq + 2;
        std::string raw;
        while (j < line.size() && line[j] != '"') {
          if (line[j] == '\\' && j + 1 < line.size()) raw.push_back(line[j++]);
          raw.push_back(line[j++]);
        }
        std::string value;
        if (j >= line.size() || !Unescape(raw, &value)) {
          p.errors.push_back("bad label value: " + line);
          break;
        }
        s.labels.emplace_back(lname, value);
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      key += line.substr(start, i + 1 - start);
      ++i;
    }
    if (i >= line.size() || line[i] != ' ') {
      p.errors.push_back("no value: " + line);
      continue;
    }
    s.value_text = line.substr(i + 1);
    if (s.value_text == "+Inf") {
      s.value = INFINITY;
    } else if (s.value_text == "-Inf") {
      s.value = -INFINITY;
    } else if (s.value_text == "NaN") {
      s.value = NAN;
    } else {
      char* end = nullptr;
      s.value = std::strtod(s.value_text.c_str(), &end);
      if (end == s.value_text.c_str() || *end != '\0') {
        p.errors.push_back("bad value: " + line);
      }
    }
    // The family: the name itself, or a histogram's name for its _bucket,
    // _sum and _count lines.
    std::string family = s.name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string sx(suffix);
      if (s.name.size() > sx.size() &&
          s.name.compare(s.name.size() - sx.size(), sx.size(), sx) == 0) {
        const std::string base = s.name.substr(0, s.name.size() - sx.size());
        if (p.types.count(base) && p.types[base] == "histogram") family = base;
      }
    }
    if (family != current) {
      p.errors.push_back("sample outside its family's block: " + line);
    }
    if (!typed.count(family))
      p.errors.push_back("sample without TYPE: " + line);
    // Duplicate series: name and label set (order-insensitive).
    auto sorted = s.labels;
    std::sort(sorted.begin(), sorted.end());
    std::string canon = s.name + "|";
    for (const auto& [k, v] : sorted) canon += k + "=" + v + "\x1f";
    if (!series.insert(canon).second) {
      p.errors.push_back("duplicate series: " + line);
    }
    p.values[key] = s.value;
    p.family_of.push_back(family);
    p.samples.push_back(std::move(s));
  }
  return p;
}

// The value of series `key` ("name{labels}" as written); fails when absent.
double Value(const Parsed& p, const std::string& key) {
  auto it = p.values.find(key);
  EXPECT_NE(it, p.values.end()) << "no series " << key;
  return it == p.values.end() ? NAN : it->second;
}

bool Has(const Parsed& p, const std::string& key) {
  return p.values.count(key) > 0;
}

// ---- Inputs ----

Duration Ms(int64_t ms) { return Duration(ms); }

MetricsInputs MakeInputs() {
  MetricsInputs in;
  Snapshot& s = in.snapshot;
  s.resources = {
      {"agents", 16, 5, 2, 9, 31.25},
      {"cpu_cores", 32, 10.5, 0, 21.5, 32.8},
      {"memory_gb", 64, 0.125, 0, 63.875, 0.2},
  };
  GroupUsage coder{"coder", 3, 8, 2, 0, 0};
  GroupUsage reviewer{"reviewer", 2, std::nullopt, 0, 0, 0};
  s.agent_types = {coder, reviewer};
  GroupUsage web{"web", 4, 10, 1, 12.5, 0.75};
  GroupUsage api{"api", 1, std::nullopt, 1, 3, 0.25};
  s.products = {web, api};
  s.active = 5;
  s.queued = 2;
  s.preempting = 1;
  s.queued_by_level[static_cast<int>(Level::kNormal)] = 1;
  s.queued_by_level[static_cast<int>(Level::kHigh)] = 1;
  s.oldest_wait_by_level[static_cast<int>(Level::kNormal)] = Ms(90500);
  s.oldest_wait_by_level[static_cast<int>(Level::kHigh)] = Ms(2000);

  CostReport& c = in.costs;
  c.tokens_used = 150000;
  c.cost_usd = 2.5;
  c.tokens_reserved = 20000;
  c.cost_reserved_usd = 0.4;
  c.products = {{"web", 3, 100000, 1.75, 0.66}, {"api", 2, 50000, 0.75, 0.33}};
  c.models = {{"opus", 2, 60000, 2, 0.4}, {"haiku", 3, 90000, 0.5, 0.6}};
  c.agent_types = {{"coder", 4, 150000, 2.5, 1}};
  BudgetLine global;
  global.scope = "global";
  global.token_limit = 1000000;
  global.cost_limit_usd = 10;
  global.tokens_used = 150000;
  global.tokens_reserved = 20000;
  global.cost_used_usd = 2.5;
  global.cost_reserved_usd = 0.4;
  BudgetLine web_budget;  // tokens only
  web_budget.scope = "product";
  web_budget.name = "web";
  web_budget.token_limit = 100000;
  web_budget.tokens_used = 100000;
  web_budget.tokens_reserved = 5000;  // over: remaining is 0
  BudgetLine coder_budget;            // cost only
  coder_budget.scope = "agent_type";
  coder_budget.name = "coder";
  coder_budget.cost_limit_usd = 5;
  coder_budget.cost_used_usd = 2.5;
  coder_budget.cost_reserved_usd = 0.25;
  c.budgets = {global, web_budget, coder_budget};
  c.breaker.open = true;
  c.paused = false;

  in.journal.operations = 1234;
  in.journal.commits = 100;
  in.journal.payload_bytes = 987654;
  in.journal.snapshots = 3;
  in.journal.last_seq = 5000;
  in.journal.committed_seq = 4999;
  in.leader = true;
  in.uptime_seconds = 3600.25;
  return in;
}

Event MakeEvent(EventType type, Level level = Level::kNormal,
                std::string product = "web") {
  Event e;
  e.type = type;
  e.level = level;
  e.product = std::move(product);
  e.agent_type = "coder";
  return e;
}

// Feeds a fixed mix of events, refusals and requests.
void Feed(ServerMetrics* m) {
  m->OnEvent(MakeEvent(EventType::kGranted, Level::kHigh));
  m->OnEvent(MakeEvent(EventType::kGranted, Level::kHigh));
  m->OnEvent(MakeEvent(EventType::kGranted, Level::kLow));
  m->OnEvent(MakeEvent(EventType::kQueued, Level::kNormal));
  m->OnEvent(MakeEvent(EventType::kPreempted, Level::kLow, "api"));
  m->OnEvent(MakeEvent(EventType::kExpired));
  m->OnEvent(MakeEvent(EventType::kExpired));
  m->OnEvent(MakeEvent(EventType::kRequeued));
  m->OnEvent(MakeEvent(EventType::kStarvation, Level::kCritical));
  m->OnEvent(MakeEvent(EventType::kBudgetAlert));
  m->OnRefusal("allocate", Code::kResourceExhausted);
  m->OnRefusal("allocate", Code::kResourceExhausted);
  m->OnRefusal("allocate", Code::kBudgetExceeded);
  m->OnRefusal("release", Code::kNotFound);
  m->ObserveRequest("/v1/allocations", "POST", 201, 0.003);
  m->ObserveRequest("/v1/allocations", "POST", 201, 0.004);
  m->ObserveRequest("/v1/allocations", "POST", 409, 0.0005);
  m->ObserveRequest("/v1/allocations/{id}", "GET", 200, 0.2);
  m->ObserveRequest("/v1/allocations/{id}", "DELETE", 404, 12);
  // A label value with a quote, a backslash and a newline.
  m->ObserveRequest("/odd\"route\\x\ny", "GET", 404, 0.01);
}

// The output of `promtool check metrics` on `text` (stdout and stderr) and
// its exit status; -1 when promtool could not be run.
int Promtool(const std::string& text, std::string* output) {
  char path[] = "/tmp/qm-metrics-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return -1;
  {
    std::ofstream f(path, std::ios::binary);
    f << text;
  }
  close(fd);
  const std::string cmd =
      std::string("promtool check metrics < ") + path + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) {
    unlink(path);
    return -1;
  }
  char buf[4096];
  size_t n;
  output->clear();
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) output->append(buf, n);
  const int status = pclose(pipe);
  unlink(path);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool PromtoolOnPath() {
  return std::system("command -v promtool >/dev/null 2>&1") == 0;
}

void ExpectPromtoolClean(const std::string& text) {
  ASSERT_TRUE(PromtoolOnPath())
      << "promtool is not on PATH: run scripts/install-deps.sh (it installs "
         "the Debian `prometheus` package)";
  std::string out;
  const int rc = Promtool(text, &out);
  EXPECT_EQ(rc, 0) << out << "\n---\n" << text;
  EXPECT_EQ(out, "") << "promtool lint problems:\n" << out;
}

// ---- Histogram ----

TEST(HistogramTest, BoundsAreInclusiveAndInfCatchesTheRest) {
  Histogram h({1, 0.5, 2, 2, INFINITY});  // sorted, deduplicated, no +Inf
  h.Observe(0.5);
  h.Observe(0.7);
  h.Observe(1);
  h.Observe(3);
  h.Observe(-1);   // below every bound: first bucket
  h.Observe(NAN);  // ignored
  const Histogram::Data d = h.Read();
  EXPECT_EQ(d.bounds, (std::vector<double>{0.5, 1, 2}));
  EXPECT_EQ(d.counts, (std::vector<uint64_t>{2, 2, 0, 1}));
  EXPECT_EQ(d.count, 5u);
  EXPECT_DOUBLE_EQ(d.sum, 4.2);
}

TEST(HistogramTest, DefaultBounds) {
  const std::vector<double> b = DefaultLatencyBounds();
  ASSERT_FALSE(b.empty());
  EXPECT_DOUBLE_EQ(b.front(), 0.0005);
  EXPECT_DOUBLE_EQ(b.back(), 10);
  EXPECT_TRUE(std::is_sorted(b.begin(), b.end()));
  const std::vector<double> batch = DefaultBatchBounds();
  EXPECT_DOUBLE_EQ(batch.front(), 1);
  EXPECT_TRUE(std::is_sorted(batch.begin(), batch.end()));
}

// ---- The exposition ----

class MetricsTest : public ::testing::Test {
 protected:
  MetricsTest()
      : latency_(DefaultLatencyBounds()), batch_(DefaultBatchBounds()) {
    in_ = MakeInputs();
    latency_.Observe(0.0004);
    latency_.Observe(0.002);
    latency_.Observe(0.002);
    latency_.Observe(0.3);
    batch_.Observe(1);
    batch_.Observe(3);
    batch_.Observe(40);
    batch_.Observe(5000);
    in_.commit_latency = &latency_;
    in_.commit_batch = &batch_;
    Feed(&metrics_);
  }

  Parsed Scrape() {
    text_ = metrics_.Render(in_);
    return Parse(text_);
  }

  Histogram latency_, batch_;
  MetricsInputs in_;
  ServerMetrics metrics_;
  std::string text_;
};

TEST_F(MetricsTest, EngineFigures) {
  const Parsed p = Scrape();
  EXPECT_EQ(Value(p, "qm_resource_capacity{resource=\"agents\"}"), 16);
  EXPECT_EQ(Value(p, "qm_resource_allocated{resource=\"cpu_cores\"}"), 10.5);
  EXPECT_EQ(Value(p, "qm_resource_reserved{resource=\"agents\"}"), 2);
  EXPECT_EQ(Value(p, "qm_resource_available{resource=\"memory_gb\"}"), 63.875);
  EXPECT_EQ(Value(p, "qm_agent_type_running_agents{agent_type=\"coder\"}"), 3);
  EXPECT_EQ(Value(p, "qm_agent_type_agent_limit{agent_type=\"coder\"}"), 8);
  EXPECT_FALSE(Has(p, "qm_agent_type_agent_limit{agent_type=\"reviewer\"}"));
  EXPECT_EQ(Value(p, "qm_agent_type_queued_requests{agent_type=\"coder\"}"), 2);
  EXPECT_EQ(Value(p, "qm_product_running_agents{product=\"web\"}"), 4);
  EXPECT_EQ(Value(p, "qm_product_agent_limit{product=\"web\"}"), 10);
  EXPECT_FALSE(Has(p, "qm_product_agent_limit{product=\"api\"}"));
  EXPECT_EQ(Value(p, "qm_product_queued_requests{product=\"api\"}"), 1);
  EXPECT_EQ(Value(p, "qm_product_fair_share_ratio{product=\"web\"}"), 0.75);
  EXPECT_EQ(Value(p, "qm_product_decayed_usage_agent_seconds{product=\"web\"}"),
            750);
  EXPECT_EQ(Value(p, "qm_allocations_active"), 5);
  EXPECT_EQ(Value(p, "qm_allocations_preempting"), 1);
  EXPECT_EQ(Value(p, "qm_queue_length{level=\"normal\"}"), 1);
  EXPECT_EQ(Value(p, "qm_queue_length{level=\"critical\"}"), 0);
  EXPECT_EQ(Value(p, "qm_queue_oldest_wait_seconds{level=\"normal\"}"), 90.5);
  EXPECT_EQ(Value(p, "qm_queue_oldest_wait_seconds{level=\"high\"}"), 2);
  EXPECT_EQ(Value(p, "qm_queue_oldest_wait_seconds{level=\"low\"}"), 0);

  EXPECT_EQ(Value(p, "qm_tokens_used"), 150000);
  EXPECT_EQ(Value(p, "qm_cost_used_usd"), 2.5);
  EXPECT_EQ(Value(p, "qm_tokens_reserved"), 20000);
  EXPECT_EQ(Value(p, "qm_cost_reserved_usd"), 0.4);
  EXPECT_EQ(Value(p, "qm_product_tokens_used{product=\"web\"}"), 100000);
  EXPECT_EQ(Value(p, "qm_product_cost_used_usd{product=\"api\"}"), 0.75);
  EXPECT_EQ(Value(p, "qm_model_tokens_used{model=\"haiku\"}"), 90000);
  EXPECT_EQ(Value(p, "qm_model_cost_used_usd{model=\"opus\"}"), 2);
  EXPECT_EQ(Value(p, "qm_agent_type_tokens_used{agent_type=\"coder\"}"),
            150000);
  EXPECT_EQ(Value(p, "qm_agent_type_cost_used_usd{agent_type=\"coder\"}"), 2.5);

  // Budgets: token figures only for lines with a token limit, cost figures
  // only for lines with a cost limit.
  const std::string g = "{scope=\"global\",name=\"\"}";
  const std::string web = "{scope=\"product\",name=\"web\"}";
  const std::string coder = "{scope=\"agent_type\",name=\"coder\"}";
  EXPECT_EQ(Value(p, "qm_budget_limit_tokens" + g), 1000000);
  EXPECT_EQ(Value(p, "qm_budget_used_tokens" + g), 150000);
  EXPECT_EQ(Value(p, "qm_budget_reserved_tokens" + g), 20000);
  EXPECT_EQ(Value(p, "qm_budget_remaining_tokens" + g), 830000);
  EXPECT_EQ(Value(p, "qm_budget_limit_usd" + g), 10);
  EXPECT_DOUBLE_EQ(Value(p, "qm_budget_remaining_usd" + g), 7.1);
  EXPECT_EQ(Value(p, "qm_budget_limit_tokens" + web), 100000);
  EXPECT_EQ(Value(p, "qm_budget_remaining_tokens" + web), 0);
  EXPECT_FALSE(Has(p, "qm_budget_limit_usd" + web));
  EXPECT_FALSE(Has(p, "qm_budget_remaining_usd" + web));
  EXPECT_FALSE(Has(p, "qm_budget_used_usd" + web));
  EXPECT_EQ(Value(p, "qm_budget_limit_usd" + coder), 5);
  EXPECT_EQ(Value(p, "qm_budget_used_usd" + coder), 2.5);
  EXPECT_EQ(Value(p, "qm_budget_reserved_usd" + coder), 0.25);
  EXPECT_EQ(Value(p, "qm_budget_remaining_usd" + coder), 2.25);
  EXPECT_FALSE(Has(p, "qm_budget_limit_tokens" + coder));
  EXPECT_FALSE(Has(p, "qm_budget_remaining_tokens" + coder));

  EXPECT_EQ(Value(p, "qm_breaker_open"), 1);
  EXPECT_EQ(Value(p, "qm_breaker_overridden"), 0);
  EXPECT_EQ(Value(p, "qm_paused"), 0);

  EXPECT_EQ(Value(p, "qm_journal_operations_total"), 1234);
  EXPECT_EQ(Value(p, "qm_journal_commits_total"), 100);
  EXPECT_EQ(Value(p, "qm_journal_payload_bytes_total"), 987654);
  EXPECT_EQ(Value(p, "qm_journal_snapshots_total"), 3);
  EXPECT_EQ(Value(p, "qm_journal_committed_seq"), 4999);
  EXPECT_EQ(Value(p, "qm_journal_applied_seq"), 5000);
  EXPECT_EQ(Value(p, "qm_journal_commit_duration_seconds_count"), 4);
  EXPECT_EQ(
      Value(p, "qm_journal_commit_duration_seconds_bucket{le=\"0.0005\"}"), 1);
  EXPECT_EQ(
      Value(p, "qm_journal_commit_duration_seconds_bucket{le=\"0.0025\"}"), 3);
  EXPECT_EQ(Value(p, "qm_journal_commit_batch_size_bucket{le=\"4\"}"), 2);
  EXPECT_EQ(Value(p, "qm_journal_commit_batch_size_bucket{le=\"1024\"}"), 3);
  EXPECT_EQ(Value(p, "qm_journal_commit_batch_size_bucket{le=\"+Inf\"}"), 4);
  EXPECT_EQ(Value(p, "qm_journal_commit_batch_size_sum"), 5044);
  EXPECT_EQ(Value(p, "qm_leader"), 1);
  EXPECT_EQ(Value(p, "qm_uptime_seconds"), 3600.25);
}

TEST_F(MetricsTest, ServerCounters) {
  const Parsed p = Scrape();
  EXPECT_EQ(Value(p, "qm_events_total{type=\"granted\"}"), 3);
  EXPECT_EQ(Value(p, "qm_events_total{type=\"expired\"}"), 2);
  EXPECT_EQ(Value(p, "qm_events_total{type=\"budget_alert\"}"), 1);
  // Known types are there from the start.
  EXPECT_EQ(Value(p, "qm_events_total{type=\"reservation_cancelled\"}"), 0);
  EXPECT_EQ(Value(p, "qm_grants_total{level=\"high\"}"), 2);
  EXPECT_EQ(Value(p, "qm_grants_total{level=\"low\"}"), 1);
  EXPECT_EQ(Value(p, "qm_grants_total{level=\"critical\"}"), 0);
  EXPECT_EQ(Value(p, "qm_queued_total{level=\"normal\"}"), 1);
  EXPECT_EQ(Value(p,
                  "qm_refusals_total{operation=\"allocate\",reason="
                  "\"resource_exhausted\"}"),
            2);
  EXPECT_EQ(Value(p,
                  "qm_refusals_total{operation=\"allocate\",reason="
                  "\"budget_exceeded\"}"),
            1);
  EXPECT_EQ(
      Value(p, "qm_refusals_total{operation=\"release\",reason=\"not_found\"}"),
      1);
  EXPECT_EQ(Value(p, "qm_preemptions_total{product=\"api\"}"), 1);
  // Products of the snapshot have a series before their first preemption.
  EXPECT_EQ(Value(p, "qm_preemptions_total{product=\"web\"}"), 0);
  EXPECT_EQ(Value(p, "qm_expiries_total"), 2);
  EXPECT_EQ(Value(p, "qm_requeues_total"), 1);
  EXPECT_EQ(Value(p, "qm_starvation_total{level=\"critical\"}"), 1);
  EXPECT_EQ(Value(p, "qm_starvation_total{level=\"low\"}"), 0);

  EXPECT_EQ(Value(p,
                  "qm_http_requests_total{route=\"/v1/allocations\","
                  "method=\"POST\",code=\"201\"}"),
            2);
  EXPECT_EQ(Value(p,
                  "qm_http_requests_total{route=\"/v1/allocations\","
                  "method=\"POST\",code=\"409\"}"),
            1);
  EXPECT_EQ(Value(p,
                  "qm_http_requests_total{route=\"/v1/allocations/{id}\","
                  "method=\"DELETE\",code=\"404\"}"),
            1);
  EXPECT_EQ(Value(p,
                  "qm_http_request_duration_seconds_count{route=\"/v1/"
                  "allocations\"}"),
            3);
  EXPECT_DOUBLE_EQ(Value(p,
                         "qm_http_request_duration_seconds_sum{route=\"/v1/"
                         "allocations\"}"),
                   0.0075);
  EXPECT_EQ(Value(p,
                  "qm_http_request_duration_seconds_bucket{route=\"/v1/"
                  "allocations\",le=\"0.0005\"}"),
            1);
  EXPECT_EQ(Value(p,
                  "qm_http_request_duration_seconds_bucket{route=\"/v1/"
                  "allocations\",le=\"0.005\"}"),
            3);
  EXPECT_EQ(Value(p,
                  "qm_http_request_duration_seconds_bucket{route=\"/v1/"
                  "allocations/{id}\",le=\"10\"}"),
            1);
  EXPECT_EQ(Value(p,
                  "qm_http_request_duration_seconds_bucket{route=\"/v1/"
                  "allocations/{id}\",le=\"+Inf\"}"),
            2);
}

TEST_F(MetricsTest, LabelValuesAreEscaped) {
  const Parsed p = Scrape();
  EXPECT_NE(text_.find("route=\"/odd\\\"route\\\\x\\ny\""), std::string::npos)
      << text_;
  EXPECT_EQ(Value(p,
                  "qm_http_requests_total{route=\"/odd\\\"route\\\\x\\ny\","
                  "method=\"GET\",code=\"404\"}"),
            1);
  // Unescaped, the label is the route as given.
  bool found = false;
  for (const Sample& s : p.samples) {
    if (s.name != "qm_http_requests_total") continue;
    for (const auto& [k, v] : s.labels) {
      if (k == "route" && v == "/odd\"route\\x\ny") found = true;
    }
  }
  EXPECT_TRUE(found);
}

TEST_F(MetricsTest, InvalidUtf8IsReplaced) {
  in_.snapshot.resources.push_back({"gpu\xff\xc3(", 1, 0, 0, 1, 0});
  in_.snapshot.resources.push_back({"caf\xc3\xa9", 2, 0, 0, 2, 0});
  const Parsed p = Scrape();
  EXPECT_EQ(Value(p,
                  "qm_resource_capacity{resource=\"gpu\xEF\xBF\xBD"
                  "\xEF\xBF\xBD(\"}"),
            1);
  EXPECT_EQ(Value(p, "qm_resource_capacity{resource=\"caf\xc3\xa9\"}"), 2);
  ExpectPromtoolClean(text_);
}

TEST_F(MetricsTest, StructureIsWellFormed) {
  const Parsed p = Scrape();
  EXPECT_TRUE(p.errors.empty()) << ::testing::PrintToString(p.errors) << "\n"
                                << text_;
  // Every family has a TYPE and samples (even the empty ones are written
  // with HELP/TYPE only); names follow the conventions.
  for (const auto& [family, type] : p.types) {
    EXPECT_EQ(family.rfind("qm_", 0), 0u) << family;
    const bool total = family.size() > 6 &&
                       family.compare(family.size() - 6, 6, "_total") == 0;
    EXPECT_EQ(total, type == "counter") << family;
  }
  EXPECT_EQ(p.types.at("qm_http_request_duration_seconds"), "histogram");
  EXPECT_EQ(p.types.at("qm_journal_commit_batch_size"), "histogram");
}

TEST_F(MetricsTest, RepeatedInputNamesGiveNoDuplicateSeries) {
  in_.snapshot.resources.push_back(in_.snapshot.resources.front());
  in_.snapshot.products.push_back(in_.snapshot.products.front());
  in_.costs.models.push_back(in_.costs.models.front());
  in_.costs.budgets.push_back(in_.costs.budgets.front());
  const Parsed p = Scrape();
  EXPECT_TRUE(p.errors.empty()) << ::testing::PrintToString(p.errors);
  ExpectPromtoolClean(text_);
}

TEST_F(MetricsTest, HistogramsAreCumulative) {
  const Parsed p = Scrape();
  // Per histogram series (name + labels without le): the buckets in order.
  struct Series {
    std::vector<std::pair<double, double>> buckets;  // le, value
    double count = -1;
  };
  std::map<std::string, Series> hist;
  const auto key_of = [](const Sample& s, const std::string& family) {
    std::string k = family + "{";
    for (const auto& [n, v] : s.labels) {
      if (n != "le") k += n + "=" + v + ",";
    }
    return k + "}";
  };
  for (size_t i = 0; i < p.samples.size(); ++i) {
    const Sample& s = p.samples[i];
    const std::string& family = p.family_of[i];
    if (p.types.at(family) != "histogram") continue;
    Series& h = hist[key_of(s, family)];
    if (s.name == family + "_bucket") {
      std::string le;
      for (const auto& [n, v] : s.labels) {
        if (n == "le") le = v;
      }
      ASSERT_FALSE(le.empty());
      ASSERT_EQ(s.labels.back().first, "le");
      h.buckets.emplace_back(le == "+Inf" ? INFINITY : std::stod(le), s.value);
    } else if (s.name == family + "_count") {
      h.count = s.value;
    }
  }
  // Two routes with latencies + the odd route, commit latency, batch size.
  EXPECT_EQ(hist.size(), 5u);
  for (const auto& [name, h] : hist) {
    ASSERT_FALSE(h.buckets.empty()) << name;
    for (size_t i = 1; i < h.buckets.size(); ++i) {
      EXPECT_LT(h.buckets[i - 1].first, h.buckets[i].first) << name;
      EXPECT_LE(h.buckets[i - 1].second, h.buckets[i].second) << name;
    }
    EXPECT_TRUE(std::isinf(h.buckets.back().first)) << name;
    EXPECT_EQ(h.buckets.back().second, h.count) << name;
  }
}

TEST_F(MetricsTest, NumbersAreSpelledAsPrometheusExpects) {
  in_.uptime_seconds = INFINITY;
  in_.snapshot.resources = {{"a", 1e15, 0.1, 0, -0.0, 0},
                            {"b", NAN, 1.0 / 3, 0, 12345678901.0, 0},
                            {"c", 1e300, 1e-7, -INFINITY, 2.5e15, 0}};
  const Parsed p = Scrape();
  EXPECT_NE(text_.find("\nqm_uptime_seconds +Inf\n"), std::string::npos);
  EXPECT_NE(
      text_.find("qm_resource_capacity{resource=\"a\"} 1000000000000000\n"),
      std::string::npos);
  EXPECT_NE(text_.find("qm_resource_capacity{resource=\"b\"} NaN\n"),
            std::string::npos);
  EXPECT_NE(text_.find("qm_resource_allocated{resource=\"a\"} 0.1\n"),
            std::string::npos);
  EXPECT_NE(text_.find("qm_resource_available{resource=\"a\"} 0\n"),
            std::string::npos);
  EXPECT_NE(text_.find("qm_resource_available{resource=\"b\"} 12345678901\n"),
            std::string::npos);
  EXPECT_DOUBLE_EQ(Value(p, "qm_resource_allocated{resource=\"b\"}"), 1.0 / 3);
  EXPECT_EQ(Value(p, "qm_resource_allocated{resource=\"b\"}"), 1.0 / 3)
      << "shortest round-trip form loses precision";
  // Outside the plain-decimal range: the shortest form, with an exponent.
  EXPECT_NE(text_.find("qm_resource_capacity{resource=\"c\"} 1e+300\n"),
            std::string::npos);
  EXPECT_NE(text_.find("qm_resource_allocated{resource=\"c\"} 1e-07\n"),
            std::string::npos);
  EXPECT_NE(text_.find("qm_resource_reserved{resource=\"c\"} -Inf\n"),
            std::string::npos);
  EXPECT_NE(
      text_.find("qm_resource_available{resource=\"c\"} 2500000000000000\n"),
      std::string::npos);
  EXPECT_NE(text_.find("le=\"0.0005\""), std::string::npos);
  EXPECT_NE(text_.find("le=\"2.5\""), std::string::npos);
  ExpectPromtoolClean(text_);
}

TEST_F(MetricsTest, PromtoolAcceptsTheScrapeWithoutWarnings) {
  Scrape();
  ExpectPromtoolClean(text_);
}

// A fresh server with empty inputs: families without series are written
// with HELP and TYPE only, which promtool accepts too.
TEST(MetricsEmptyTest, PromtoolAcceptsAnEmptyScrape) {
  ServerMetrics m;
  const std::string text = m.Render(MetricsInputs{});
  const Parsed p = Parse(text);
  EXPECT_TRUE(p.errors.empty()) << ::testing::PrintToString(p.errors);
  EXPECT_EQ(Value(p, "qm_expiries_total"), 0);
  EXPECT_EQ(Value(p, "qm_grants_total{level=\"normal\"}"), 0);
  EXPECT_EQ(p.types.count("qm_journal_commit_duration_seconds"), 0u);
  EXPECT_EQ(p.types.count("qm_refusals_total"), 1u);
  ExpectPromtoolClean(text);
}

TEST(MetricsConcurrencyTest, UpdatesWhileRendering) {
  ServerMetrics m;
  MetricsInputs in = MakeInputs();
  constexpr int kThreads = 4;
  constexpr int kPerThread = 5000;
  std::atomic<bool> done{false};
  std::atomic<int> renders{0};
  std::thread scraper([&] {
    while (!done.load()) {
      const Parsed p = Parse(m.Render(in));
      EXPECT_TRUE(p.errors.empty());
      renders.fetch_add(1);
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&m, &renders, t] {
      // Start once scrapes are under way, so updates overlap them.
      while (renders.load() == 0) std::this_thread::yield();
      const std::string route = "/v1/route" + std::to_string(t % 2);
      for (int i = 0; i < kPerThread; ++i) {
        m.OnEvent(MakeEvent(i % 2 ? EventType::kGranted : EventType::kQueued,
                            static_cast<Level>(i % kNumLevels),
                            "p" + std::to_string(i % 3)));
        m.OnEvent(MakeEvent(EventType::kPreempted, Level::kLow,
                            "p" + std::to_string(i % 3)));
        m.ObserveRequest(route, i % 3 ? "GET" : "POST", 200, 0.001 * (i % 7));
        if (i % 10 == 0) m.OnRefusal("allocate", Code::kCircuitOpen);
      }
    });
  }
  for (std::thread& w : writers) w.join();
  done.store(true);
  scraper.join();
  EXPECT_GT(renders.load(), 1);

  const Parsed p = Parse(m.Render(in));
  EXPECT_TRUE(p.errors.empty());
  constexpr double kTotal = kThreads * kPerThread;
  EXPECT_EQ(Value(p, "qm_events_total{type=\"granted\"}") +
                Value(p, "qm_events_total{type=\"queued\"}"),
            kTotal);
  EXPECT_EQ(Value(p, "qm_events_total{type=\"preempted\"}"), kTotal);
  double grants = 0, preemptions = 0, requests = 0;
  for (const Sample& s : p.samples) {
    if (s.name == "qm_grants_total") grants += s.value;
    if (s.name == "qm_preemptions_total") preemptions += s.value;
    if (s.name == "qm_http_requests_total") requests += s.value;
  }
  EXPECT_EQ(grants, kTotal / 2);
  EXPECT_EQ(preemptions, kTotal);
  EXPECT_EQ(requests, kTotal);
  EXPECT_EQ(Value(p,
                  "qm_http_request_duration_seconds_count{route=\"/v1/"
                  "route0\"}") +
                Value(p,
                      "qm_http_request_duration_seconds_count{route=\"/v1/"
                      "route1\"}"),
            kTotal);
  EXPECT_EQ(Value(p,
                  "qm_refusals_total{operation=\"allocate\",reason="
                  "\"circuit_open\"}"),
            kThreads * (kPerThread / 10));
}

// Scrape cost: 50 agent types, 20 products, many routes and budgets; a
// render must take well under a millisecond-scale budget per scrape.
// A fleet-sized scrape stays well-formed. (How fast it renders is for a
// benchmark, not a timed test.)
TEST(MetricsScaleTest, ManyGroupsRenderWellFormed) {
  ServerMetrics m;
  MetricsInputs in = MakeInputs();
  for (int i = 0; i < 50; ++i) {
    in.snapshot.agent_types.push_back(
        {"type" + std::to_string(i), 1, 4, 1, 0, 0});
    in.costs.agent_types.push_back(
        {"type" + std::to_string(i), 1, 1000, 0.1, 0.01});
    BudgetLine b;
    b.scope = "agent_type";
    b.name = "type" + std::to_string(i);
    b.token_limit = 1000;
    in.costs.budgets.push_back(b);
  }
  for (int i = 0; i < 20; ++i) {
    in.snapshot.products.push_back({"prod" + std::to_string(i), 1, 4, 1, 0, 0});
    in.costs.products.push_back({"prod" + std::to_string(i), 1, 1000, 0.1, 0});
  }
  for (int i = 0; i < 40; ++i) {
    m.ObserveRequest("/v1/r" + std::to_string(i), "GET", 200, 0.01);
  }
  const std::string text = m.Render(in);
  EXPECT_TRUE(Parse(text).errors.empty());
  EXPECT_NE(text.find("qm_agent_type_running_agents{agent_type=\"type49\"}"),
            std::string::npos);
  ExpectPromtoolClean(text);
}

}  // namespace
}  // namespace qm::server
