#include "cli/top_cmd.h"

#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "cli/client_cmd.h"
#include "server/http_client.h"

namespace qm::cli {
namespace {

using api::Json;

// ---------------------------------------------------------------- format

double Num(const Json& j, double fallback = 0) {
  return j.is_number() ? j.get<double>() : fallback;
}

// 1234567 -> "1,234,567".
std::string Grouped(double v) {
  const long long n = std::llround(v);
  std::string digits = std::to_string(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (n < 0 ? "-" : "") + out;
}

// A count that may be fractional (resources in fixed point).
std::string Amount(double v) {
  if (std::fabs(v - std::round(v)) < 1e-9) return Grouped(v);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

std::string Usd(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, std::fabs(v) < 1 && v != 0 ? "$%.3f" : "$%.2f",
                v);
  return buf;
}

std::string Percent(double p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, p >= 10 ? "%.0f%%" : "%.1f%%", p);
  return buf;
}

// The server's durations ("1h2m3s", "250ms") shortened to two units.
std::string ShortDuration(const std::string& text) {
  double ms = 0;
  size_t i = 0;
  bool any = false;
  while (i < text.size()) {
    size_t j = i;
    while (
        j < text.size() &&
        (std::isdigit(static_cast<unsigned char>(text[j])) || text[j] == '.')) {
      ++j;
    }
    if (j == i) {
      ++i;
      continue;
    }
    const double v = std::atof(text.substr(i, j - i).c_str());
    size_t k = j;
    while (k < text.size() && std::isalpha(static_cast<unsigned char>(text[k])))
      ++k;
    const std::string unit = text.substr(j, k - j);
    const double scale = unit == "d"    ? 86400000
                         : unit == "h"  ? 3600000
                         : unit == "m"  ? 60000
                         : unit == "s"  ? 1000
                         : unit == "ms" ? 1
                                        : 0;
    ms += v * scale;
    any = true;
    i = k;
  }
  if (!any) return text.empty() ? "-" : text;
  long long s = std::llround(ms / 1000);
  char buf[32];
  if (s >= 86400) {
    std::snprintf(buf, sizeof buf, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
  } else if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, s % 3600 / 60);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%llds", s);
  }
  return buf;
}

// Display columns of UTF-8 text (one per code point).
size_t Columns(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// `s` cut or padded to `w` columns (right-aligned when `right`).
std::string Fit(const std::string& s, size_t w, bool right = false) {
  const size_t cols = Columns(s);
  if (cols > w) {
    if (w == 0) return "";
    std::string out;
    size_t n = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      const unsigned char c = s[i];
      if ((c & 0xC0) != 0x80) {
        if (n == w - 1) break;
        ++n;
      }
      out += s[i];
    }
    return out + "~";
  }
  const std::string pad(w - cols, ' ');
  return right ? pad + s : s + pad;
}

std::string Str(const Json& j, const std::string& key,
                const std::string& fallback = "-") {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string()) {
    return fallback;
  }
  const std::string v = j[key].get<std::string>();
  return v.empty() ? fallback : v;
}

// Time of day (UTC, as the server gives it) from an RFC 3339 text.
std::string ClockOf(const std::string& rfc3339) {
  const size_t t = rfc3339.find('T');
  if (t == std::string::npos || rfc3339.size() < t + 9) return rfc3339;
  return rfc3339.substr(t + 1, 8);
}

class Painter {
 public:
  explicit Painter(bool color) : color_(color) {}
  std::string Bold(const std::string& s) const { return Wrap("1", s); }
  std::string Dim(const std::string& s) const { return Wrap("2", s); }
  std::string Green(const std::string& s) const { return Wrap("32", s); }
  std::string Yellow(const std::string& s) const { return Wrap("33", s); }
  std::string Red(const std::string& s) const { return Wrap("31", s); }
  std::string Inverse(const std::string& s) const { return Wrap("7", s); }
  // Colours a status word: healthy green, warning yellow, critical red.
  std::string Status(const std::string& s) const {
    if (s == "healthy" || s == "optimal") return Green(s);
    if (s == "warning") return Yellow(s);
    if (s == "critical") return Red(s);
    return s;
  }
  // By share of a limit: yellow from 80%, red from 100%.
  std::string Level(const std::string& s, double percent) const {
    if (percent >= 100) return Red(s);
    if (percent >= 80) return Yellow(s);
    return s;
  }
  bool colored() const { return color_; }
  // A bar of `width` cells, `percent` full.
  std::string Bar(double percent, int width) const {
    const int full = std::clamp(
        static_cast<int>(std::lround(percent / 100.0 * width)), 0, width);
    std::string bar = std::string(full, '#');
    return "[" + Level(bar, percent) + std::string(width - full, '.') + "]";
  }

 private:
  std::string Wrap(const char* code, const std::string& s) const {
    if (!color_ || s.empty()) return s;
    return std::string("\x1b[") + code + "m" + s + "\x1b[0m";
  }
  bool color_;
};

// One table: a header and rows of cells; column widths from the content,
// the last column taking what is left of `width`.
struct Table {
  std::vector<std::string> header;
  std::vector<bool> right;  // right-aligned columns
  std::vector<std::vector<std::string>> rows;

  std::vector<std::string> Render(size_t width, const Painter& p,
                                  size_t max_rows) const {
    std::vector<size_t> w(header.size());
    for (size_t c = 0; c < header.size(); ++c) {
      w[c] = Columns(header[c]);
      for (const auto& r : rows) w[c] = std::max(w[c], Columns(r[c]));
      w[c] = std::min<size_t>(w[c], 28);
    }
    // The last column (a reason, a time) takes what is left.
    w.back() = Columns(header.back());
    for (const auto& r : rows) w.back() = std::max(w.back(), Columns(r.back()));
    size_t used = 0;
    for (size_t c = 0; c + 1 < w.size(); ++c) used += w[c] + 2;
    w.back() = width > used + 4 ? std::min(w.back(), width - used) : 4;
    auto line = [&](const std::vector<std::string>& cells) {
      std::string out;
      for (size_t c = 0; c < cells.size(); ++c) {
        if (c) out += "  ";
        out += Fit(cells[c], w[c], right[c]);
      }
      while (!out.empty() && out.back() == ' ') out.pop_back();
      return out;
    };
    std::vector<std::string> out = {
        p.colored() ? p.Inverse(Fit(line(header), width)) : line(header)};
    const size_t shown = std::min(rows.size(), max_rows);
    for (size_t i = 0; i < shown; ++i) out.push_back(line(rows[i]));
    if (shown < rows.size()) {
      out.push_back(
          p.Dim("  ... " + std::to_string(rows.size() - shown) + " more"));
    }
    return out;
  }
};

}  // namespace

std::string RenderTopFrame(const TopData& d, int width_in, int height,
                           bool color) {
  const Painter p(color);
  const size_t width = static_cast<size_t>(std::max(width_in, 40));
  std::vector<std::string> lines;
  const Json& st = d.status;
  const Json& costs = d.costs;

  // Title.
  std::string title = p.Bold("qm top") + "  " + d.server;
  if (st.is_object()) title += "  " + ClockOf(Str(st, "time", "")) + " UTC";
  if (st.is_object() && st.contains("health") && st["health"].is_object()) {
    title +=
        "  health " + p.Status(Str(st["health"], "overall_status", "unknown"));
  }
  if (costs.is_object() && costs.value("paused", false)) {
    title += "  " + p.Yellow(p.Bold("PAUSED"));
  }
  if (costs.is_object() && costs.contains("circuit_breaker") &&
      costs["circuit_breaker"].value("open", false)) {
    title +=
        "  " + p.Red(p.Bold(costs["circuit_breaker"].value("overridden", false)
                                ? "BREAKER OVERRIDDEN"
                                : "BREAKER OPEN"));
  }
  lines.push_back(title);
  if (!d.error.empty()) lines.push_back(p.Red("! " + d.error));

  // Agents and queue.
  if (st.is_object()) {
    const Json agents = st.contains("resources") && st["resources"].is_object()
                            ? st["resources"].value("agents", Json())
                            : Json();
    const Json& alloc = st.value("allocations", Json::object());
    std::string line = p.Bold("Agents  ");
    if (agents.is_object()) {
      const double used = Num(agents["allocated"]);
      const double total = Num(agents["total"]);
      const double pct = Num(agents["utilization_percent"]);
      line += p.Bold(Amount(used)) + "/" + Amount(total) + " active " +
              p.Bar(pct, 20) + " " + Percent(pct);
    } else {
      line += p.Bold(Amount(Num(alloc.value("active", Json(0))))) + " active";
    }
    line += "   allocations " + Amount(Num(alloc.value("active", Json(0))));
    const double queued = Num(alloc.value("queued", Json(0)));
    line += "   queued " + (queued > 0 ? p.Yellow(p.Bold(Amount(queued)))
                                       : p.Bold(Amount(queued)));
    if (alloc.contains("oldest_wait") && alloc["oldest_wait"].is_string()) {
      line += " (oldest " +
              ShortDuration(alloc["oldest_wait"].get<std::string>()) + ")";
    }
    lines.push_back(line);
  }

  // Money.
  if (costs.is_object()) {
    const std::string period = Str(costs, "period", "daily");
    std::string line = p.Bold(period == "daily"    ? "Today   "
                              : period == "weekly" ? "Week    "
                                                   : "Month   ");
    const Json limits = costs.value("limits", Json::object());
    const Json pct = costs.value("percent_used", Json::object());
    const double tokens = Num(costs["tokens_used"]);
    line += "tokens " + p.Bold(Grouped(tokens));
    if (limits.value("tokens", Json()).is_number()) {
      const double tp = Num(pct.value("tokens", Json()));
      line += " / " + Grouped(Num(limits["tokens"])) + " (" +
              p.Level(Percent(tp), tp) + ")";
    }
    const double usd = Num(costs["cost_usd"]);
    line += "   cost " + p.Bold(Usd(usd));
    if (limits.value("cost", Json()).is_number()) {
      const double cp = Num(pct.value("cost", Json()));
      line += " / " + Usd(Num(limits["cost"])) + " (" +
              p.Level(Percent(cp), cp) + ")";
    }
    if (costs.contains("projected_eod") && costs["projected_eod"].is_object()) {
      line += "   projected EOD " +
              Usd(Num(costs["projected_eod"].value("cost_usd", Json(0))));
    }
    lines.push_back(line);
  }

  // Health per resource, when the server reports it.
  if (st.is_object() && st.contains("health") && st["health"].is_object()) {
    const Json& h = st["health"];
    std::string line = p.Bold("Health  ");
    const std::pair<const char*, const char*> parts[] = {
        {"overall_status", "overall"},
        {"cpu_status", "cpu"},
        {"memory_status", "memory"},
        {"storage_status", "storage"},
        {"agent_pool_status", "agent pool"}};
    bool first = true;
    for (const auto& [key, label] : parts) {
      if (!h.contains(key)) continue;
      line += std::string(first ? "" : " · ") + label + " " +
              p.Status(Str(h, key, "n/a"));
      first = false;
    }
    lines.push_back(line);
  }
  lines.push_back("");

  // Agents per type and per product, side by side when there is room.
  if (st.is_object()) {
    auto groups = [&](const char* key, const char* name) {
      Table t;
      t.header = {name, "RUN", "LIMIT", "QUEUED"};
      t.right = {false, true, true, true};
      if (st.contains(key) && st[key].is_object()) {
        for (const auto& [group, g] : st[key].items()) {
          const Json limit = g.value("limit", Json());
          t.rows.push_back({group,
                            Amount(Num(g.value("running_agents", Json(0)))),
                            limit.is_number() ? Amount(Num(limit)) : "-",
                            Amount(Num(g.value("queued", Json(0))))});
        }
      }
      return t;
    };
    const Table types = groups("agent_types", "AGENT TYPE");
    const Table products = groups("products", "PRODUCT");
    const size_t rows = std::max(types.rows.size(), products.rows.size());
    const size_t cap = height > 0 ? 6 : 50;
    if (width >= 84) {
      const size_t half = (width - 4) / 2;
      auto a = types.Render(half, p, cap);
      auto b = products.Render(half, p, cap);
      for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
        const std::string left = i < a.size() ? a[i] : "";
        // Pad by visible width (escapes take no columns).
        size_t visible = 0;
        for (size_t k = 0; k < left.size(); ++k) {
          if (left[k] == '\x1b') {
            while (k < left.size() && left[k] != 'm') ++k;
            continue;
          }
          visible += (static_cast<unsigned char>(left[k]) & 0xC0) != 0x80;
        }
        lines.push_back(left +
                        std::string(half + 4 - std::min(visible, half), ' ') +
                        (i < b.size() ? b[i] : ""));
      }
    } else {
      for (auto& l : types.Render(width, p, cap)) lines.push_back(l);
      lines.push_back("");
      for (auto& l : products.Render(width, p, cap)) lines.push_back(l);
    }
    (void)rows;
    lines.push_back("");
  }

  // The tables below share what is left of the screen.
  const int left =
      height > 0 ? std::max(2, height - static_cast<int>(lines.size()) - 5)
                 : 1000;
  const size_t queue_rows = static_cast<size_t>(std::max(1, left / 2));

  if (d.queue.is_object()) {
    Table t;
    t.header = {"#",        "ALLOCATION", "PRODUCT", "AGENT TYPE",
                "PRIORITY", "SCORE",      "WAITED",  "WHY QUEUED"};
    t.right = {true, false, false, false, false, true, true, false};
    for (const Json& e : d.queue.value("queue", Json::array())) {
      char score[32];
      std::snprintf(score, sizeof score, "%.3f",
                    Num(e.value("score", Json(0))));
      t.rows.push_back({std::to_string(e.value("position", 0)),
                        Str(e, "allocation_id"), Str(e, "product", "default"),
                        Str(e, "agent_type"), Str(e, "priority"), score,
                        ShortDuration(Str(e, "waited", "")),
                        Str(e, "reason_queued")});
    }
    lines.push_back(p.Bold("Queue") + " (" +
                    Amount(Num(d.queue.value("queued", Json(0)))) + ")");
    if (t.rows.empty()) {
      lines.push_back(p.Dim("  nothing queued"));
    } else {
      for (auto& l : t.Render(width, p, queue_rows)) lines.push_back(l);
    }
    lines.push_back("");
  }

  if (d.allocations.is_object()) {
    Table t;
    t.header = {"ALLOCATION", "WORKFLOW", "PRODUCT", "AGENT TYPE",
                "PRIORITY",   "MODEL",    "TOKENS",  "EXPIRES"};
    t.right = {false, false, false, false, false, false, true, false};
    size_t active = 0;
    for (const Json& a : d.allocations.value("allocations", Json::array())) {
      if (Str(a, "status") != "active") continue;
      ++active;
      const Json b = a.value("budget", Json::object());
      std::string tokens = Grouped(Num(b.value("used_tokens", Json(0))));
      if (b.value("max_tokens", Json()).is_number()) {
        tokens += "/" + Grouped(Num(b["max_tokens"]));
      }
      std::string expires = a.value("expires_at", Json()).is_string()
                                ? ClockOf(a["expires_at"].get<std::string>())
                                : "no lease";
      if (a.contains("preempt_deadline")) expires += " preempting";
      t.rows.push_back({Str(a, "allocation_id"), Str(a, "workflow_id"),
                        Str(a, "product", "default"), Str(a, "agent_type"),
                        Str(a, "priority"), Str(b, "model"), tokens, expires});
    }
    lines.push_back(p.Bold("Allocations") + " (" + std::to_string(active) +
                    " active)");
    if (t.rows.empty()) {
      lines.push_back(p.Dim("  none active"));
    } else {
      const size_t rows =
          height > 0 ? static_cast<size_t>(std::max(
                           1, height - static_cast<int>(lines.size()) - 3))
                     : 1000;
      for (auto& l : t.Render(width, p, rows)) lines.push_back(l);
    }
  }

  std::string out;
  const size_t n = height > 0
                       ? std::min(lines.size(), static_cast<size_t>(height))
                       : lines.size();
  for (size_t i = 0; i < n; ++i) out += lines[i] + "\n";
  return out;
}

namespace {

// ---------------------------------------------------------------- fetching

server::ClientOptions OptionsFor(const std::string& url) {
  server::ClientOptions o;
  o.url = url;
  o.timeout = std::chrono::seconds(10);
  if (const char* token = std::getenv("QM_TOKEN")) o.token = token;
  if (const char* ca = std::getenv("QM_CA_FILE")) o.ca_file = ca;
  return o;
}

// GETs `target` and returns its envelope's result, or the error.
StatusOr<Json> GetResult(server::HttpClient& client,
                         const std::string& target) {
  auto r = client.Call("GET", target);
  if (!r.ok()) return r.status();
  Json j = Json::parse(r->body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Internal(target + ": the server's answer is not JSON (HTTP " +
                    std::to_string(r->status) + ")");
  }
  if (j.value("status", "") != "success") {
    const std::string msg = j.contains("error") && j["error"].is_object()
                                ? j["error"].value("message", "")
                                : "";
    return Unavailable(target + ": HTTP " + std::to_string(r->status) + ": " +
                       msg);
  }
  return j["result"];
}

// Reads the queue, allocations and costs (and the status unless given).
Status Fetch(server::HttpClient& client, TopData* d, bool with_status) {
  if (with_status) {
    auto s = GetResult(client, "/v1/status");
    if (!s.ok()) return s.status();
    d->status = std::move(*s);
  }
  auto q = GetResult(client, "/v1/queue");
  if (!q.ok()) return q.status();
  d->queue = std::move(*q);
  auto a = GetResult(client, "/v1/allocations?status=active&limit=1000");
  if (!a.ok()) return a.status();
  d->allocations = std::move(*a);
  auto c = GetResult(client, "/v1/costs");
  if (!c.ok()) return c.status();
  d->costs = std::move(*c);
  return Status::Ok();
}

std::string ServerUrl(const std::string& flag) {
  if (!flag.empty()) return flag;
  const char* env = std::getenv("QM_SERVER");
  if (env != nullptr && *env != '\0') return env;
  return kDefaultServer;
}

// ---------------------------------------------------------------- terminal

std::atomic<bool> g_stop{false};
std::atomic<bool> g_resized{false};

extern "C" void OnStopSignal(int) { g_stop = true; }
extern "C" void OnWinch(int) { g_resized = true; }

void TerminalSize(int* width, int* height) {
  winsize ws{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
    *width = ws.ws_col;
    *height = ws.ws_row;
    return;
  }
  *width = 120;
  *height = 0;
  if (const char* c = std::getenv("COLUMNS")) *width = std::max(40, atoi(c));
}

// Puts the terminal in the state `top` needs (no echo, keys one at a time,
// alternate screen, no cursor) and back.
class TerminalGuard {
 public:
  TerminalGuard() {
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_) == 0) {
      termios raw = saved_;
      raw.c_lflag &= ~(ICANON | ECHO);  // ISIG kept: Ctrl-C is SIGINT
      raw.c_cc[VMIN] = 0;
      raw.c_cc[VTIME] = 0;
      keys_ = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    std::fputs("\x1b[?1049h\x1b[?25l", stdout);
    std::fflush(stdout);
  }
  ~TerminalGuard() {
    std::fputs("\x1b[?25h\x1b[?1049l", stdout);
    std::fflush(stdout);
    if (keys_) tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  bool keys() const { return keys_; }

 private:
  termios saved_{};
  bool keys_ = false;
};

}  // namespace

TopCommand::TopCommand(CLI::App* app) {
  cmd_ = app->add_subcommand(
      "top",
      "A live terminal view of the server (like top): health, agents per "
      "type and product, the queue, allocations and today's cost; refreshed "
      "from its monitor stream. q or Ctrl-C quits");
  cmd_->add_option("--server", server_,
                   "The qm server (default: $QM_SERVER, else " +
                       std::string(kDefaultServer) + ")")
      ->type_name("URL");
  cmd_->add_flag("--once", once_,
                 "Print one frame and exit (for scripts and tests)");
  cmd_->add_option("--interval,-d", interval_,
                   "Seconds between refreshes (the monitor stream's interval)")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  cmd_->add_option("--color", color_,
                   "ANSI colours: auto (on a terminal), "
                   "always or never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->capture_default_str();
}

bool TopCommand::chosen() const { return cmd_ != nullptr && *cmd_; }

int TopCommand::Run(std::ostream& out, std::ostream& err) const {
  const std::string url = ServerUrl(server_);
  const bool tty = isatty(STDOUT_FILENO) != 0;
  const bool color = color_ == "always" || (color_ == "auto" && tty && !once_);

  if (once_) {
    server::HttpClient client(OptionsFor(url));
    TopData d;
    d.server = url;
    const Status s = Fetch(client, &d, /*with_status=*/true);
    if (!s.ok()) {
      err << "qm top: " << s.message()
          << (s.code() == Code::kUnavailable
                  ? " (start one with `qm serve`, or point --server / "
                    "$QM_SERVER at one)"
                  : "")
          << "\n";
      return kExitError;
    }
    int width = 0, height = 0;
    TerminalSize(&width, &height);  // $COLUMNS or 120 when not a terminal
    out << RenderTopFrame(d, width, /*height=*/0, color);
    return 0;
  }

  // Live: a thread follows the monitor stream and renders a frame per
  // snapshot; this thread shows it and reads keys.
  std::mutex mu;
  std::condition_variable cv;
  TopData latest;
  latest.server = url;
  bool have = false;
  uint64_t version = 0;

  g_stop = false;
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {
  }, old_term{}, old_winch{};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  struct sigaction wa {};
  wa.sa_handler = OnWinch;
  sigemptyset(&wa.sa_mask);
  sigaction(SIGWINCH, &wa, &old_winch);

  std::thread follower([&] {
    server::HttpClient stream_client(OptionsFor(url));
    server::HttpClient client(OptionsFor(url));
    const std::string target =
        "/v1/monitor?interval=" + std::to_string(interval_);
    while (!g_stop) {
      const Status s = stream_client.Stream(
          target,
          [&](const std::string&, const std::string& event,
              const std::string& data) {
            if (g_stop) return false;
            if (event != "snapshot") return true;
            TopData d;
            d.server = url;
            d.status = Json::parse(data, nullptr, false);
            const Status f = Fetch(client, &d, /*with_status=*/false);
            if (!f.ok()) d.error = f.message();
            std::lock_guard<std::mutex> lock(mu);
            latest = std::move(d);
            have = true;
            ++version;
            cv.notify_all();
            return !g_stop;
          },
          std::chrono::seconds(interval_ * 3 + 20));
      if (g_stop) break;
      {
        std::lock_guard<std::mutex> lock(mu);
        latest.error = s.ok() ? "the server ended the stream; reconnecting"
                              : s.message() + "; retrying";
        ++version;
        cv.notify_all();
      }
      for (int i = 0; i < 20 && !g_stop; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  });

  {
    TerminalGuard term;
    uint64_t shown = ~uint64_t{0};
    while (!g_stop) {
      // Keys: q quits (Ctrl-C arrives as SIGINT).
      if (term.keys()) {
        pollfd pfd{STDIN_FILENO, POLLIN, 0};
        if (poll(&pfd, 1, 100) > 0) {
          char c = 0;
          if (read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q')) {
            g_stop = true;
            break;
          }
        }
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      std::string frame;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (version == shown && !g_resized) continue;
        shown = version;
        g_resized = false;
        int width = 0, height = 0;
        TerminalSize(&width, &height);
        if (have || !latest.error.empty()) {
          frame =
              RenderTopFrame(latest, width, height > 1 ? height - 1 : 0, color);
        } else {
          frame = "qm top: connecting to " + url + " ...\n";
        }
        frame += (color ? "\x1b[2m" : std::string()) + "q quit · every " +
                 std::to_string(interval_) + "s from /v1/monitor" +
                 (color ? "\x1b[0m" : std::string());
      }
      // Home, each line cleared to its end, then the rest of the screen.
      std::string screen = "\x1b[H";
      size_t start = 0;
      while (start <= frame.size()) {
        const size_t nl = frame.find('\n', start);
        screen += frame.substr(
            start, nl == std::string::npos ? std::string::npos : nl - start);
        screen += "\x1b[K";
        if (nl == std::string::npos) break;
        screen += "\n";
        start = nl + 1;
      }
      screen += "\x1b[J";
      std::fwrite(screen.data(), 1, screen.size(), stdout);
      std::fflush(stdout);
    }
  }  // the terminal is restored here, before waiting for the stream

  follower.join();
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  sigaction(SIGWINCH, &old_winch, nullptr);
  (void)out;
  return 0;
}

}  // namespace qm::cli
