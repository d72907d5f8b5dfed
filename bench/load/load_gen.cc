// qm_load: a load generator for `qm serve`. N client threads, each with one
// keep-alive connection, run allocate -> release pairs for a fixed time and
// report allocations/s and the latency of each call (p50, p99). The
// clients are bench::PlainHttp (blocking calls straight on the socket, as
// the peers' client libraries make theirs), so that the load generator
// takes as little of the machine as it can.
//
//   qm_load [--url http://127.0.0.1:7070] [--clients 64] [--seconds 10]
//   qm_load --handoff 200
//
// --handoff N measures the hand-off from a release to a waiting allocate,
// N times: one slot, held; a client waits for it (allocate with `wait`);
// the holder releases; the time from sending the release to the waiter's
// answer (an upper bound of commit-to-waiter: it includes the release's own
// commit), and from the release's answer to the waiter's.
//
// Without --url it starts a server in this process (SQLite, synchronous
// FULL, in a temporary directory, with capacity for every client), so one
// command measures the whole path: HTTP, JSON, engine, journal commit.
// Prints one JSON object.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "load/plain_http.h"
#include "qm/config_loader.h"
#include "server/app.h"
#include "server/http_client.h"

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p * v.size()));
  std::nth_element(v.begin(), v.begin() + static_cast<ptrdiff_t>(k), v.end());
  return v[k];
}

}  // namespace

int main(int argc, char** argv) {
  std::string url;
  int clients = 64;
  double seconds = 10;
  int handoff = 0;
  int workers = 0;  // 0: as many as clients
  const char* kUsage =
      "usage: qm_load [--url URL] [--clients N] [--seconds S] [--workers N]\n"
      "       qm_load [--url URL] --handoff N\n"
      "Runs allocate -> release pairs from N keep-alive clients for S seconds\n"
      "against URL (default: a server started in this process on SQLite,\n"
      "synchronous FULL, in a temporary directory) and prints allocations/s\n"
      "and latencies as JSON. --handoff N measures N release -> waiting\n"
      "allocate hand-offs instead. --workers: the in-process server's worker\n"
      "threads (default: one per client).\n";
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (i + 1 == argc) {
      std::cerr << "qm_load: " << flag << " needs a value\n" << kUsage;
      return 2;
    }
    const std::string value = argv[i + 1];
    auto number = [&](double* out, double min) {
      char* end = nullptr;
      const double v = std::strtod(value.c_str(), &end);
      if (end == value.c_str() || *end != '\0' || !(v >= min)) {
        std::cerr << "qm_load: " << flag << " must be a number >= " << min
                  << ", got \"" << value << "\"\n";
        return false;
      }
      *out = v;
      return true;
    };
    double v = 0;
    if (flag == "--url") {
      url = value;
    } else if (flag == "--clients") {
      if (!number(&v, 1)) return 2;
      clients = static_cast<int>(v);
    } else if (flag == "--seconds") {
      if (!number(&seconds, 0.1)) return 2;
    } else if (flag == "--handoff") {
      if (!number(&v, 1)) return 2;
      handoff = static_cast<int>(v);
    } else if (flag == "--workers") {
      if (!number(&v, 1)) return 2;
      workers = static_cast<int>(v);
    } else {
      std::cerr << "qm_load: unknown option " << flag << "\n" << kUsage;
      return 2;
    }
  }
  std::unique_ptr<qm::server::App> app;
  std::string dir;
  if (url.empty()) {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "qm-load-XXXXXX").string();
    dir = mkdtemp(tmpl.data());
    qm::server::ServeOptions o;
    o.http.listen = "127.0.0.1:0";
    o.service.workers = workers > 0 ? workers : std::max(clients, 1);
    o.durable.store.location = dir;
    auto c = qm::LoadConfigString(
        "max_concurrent:\n  total: " +
            std::to_string(handoff > 0 ? 1 : clients * 2) + "\n",
        "qm_load config");
    if (!c.ok()) {
      std::cerr << c.status().ToString() << "\n";
      return 1;
    }
    o.config = *c;
    auto started = qm::server::App::Start(std::move(o));
    if (!started.ok()) {
      std::cerr << started.status().ToString() << "\n";
      return 1;
    }
    app = std::move(*started);
    url = "http://" + app->address();
  }

  if (handoff > 0) {
    qm::server::ClientOptions o;
    o.url = url;
    qm::server::HttpClient holder(o), waiter_client(o);
    const std::string body =
        R"({"workflow_id": "handoff", "agent_type": "worker"})";
    auto first = holder.Call("POST", "/v1/allocations", body);
    std::string held =
        Json::parse(first->body)["result"].value("allocation_id", "");
    std::vector<double> from_send, from_answer;
    for (int i = 0; i < handoff; ++i) {
      std::atomic<bool> queued{false};
      Clock::time_point got;
      std::string next;
      std::thread waiter([&] {
        Json b = Json::parse(body);
        b["wait"] = 30;
        queued = true;
        auto r = waiter_client.Call("POST", "/v1/allocations", b.dump(),
                                    std::chrono::seconds(60));
        got = Clock::now();
        if (r.ok()) {
          next = Json::parse(r->body)["result"].value("allocation_id", "");
        }
      });
      while (!queued) std::this_thread::yield();
      // Let the waiter's request reach the server and queue.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      const auto sent = Clock::now();
      auto rel = holder.Call("POST", "/v1/allocations/" + held + "/release");
      const auto answered = Clock::now();
      waiter.join();
      if (!rel.ok() || next.empty()) {
        std::cerr << "hand-off " << i << " failed\n";
        return 1;
      }
      from_send.push_back(
          std::chrono::duration<double, std::milli>(got - sent).count());
      from_answer.push_back(
          std::chrono::duration<double, std::milli>(got - answered).count());
      held = next;
    }
    Json out;
    out["handoffs"] = handoff;
    out["release_sent_to_waiter_ms"] = {{"p50", Percentile(from_send, 0.5)},
                                        {"p99", Percentile(from_send, 0.99)}};
    out["release_answered_to_waiter_ms"] = {
        {"p50", Percentile(from_answer, 0.5)},
        {"p99", Percentile(from_answer, 0.99)}};
    if (app) {
      (void)app->Stop(std::chrono::seconds(5));
      std::filesystem::remove_all(dir);
    }
    std::cout << out.dump() << std::endl;
    return 0;
  }

  std::atomic<bool> stop{false};
  std::atomic<int64_t> pairs{0}, errors{0};
  std::mutex mu;
  std::vector<double> alloc_ms, release_ms;
  std::vector<std::thread> threads;
  const auto t0 = Clock::now();
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&, t] {
      qm::bench::PlainHttp c(url);
      std::vector<double> a_ms, r_ms;
      const std::string body = R"({"workflow_id": "load-)" + std::to_string(t) +
                               R"(", "agent_type": "worker"})";
      while (!stop) {
        auto s0 = Clock::now();
        auto a = c.Call("POST", "/v1/allocations", body);
        auto s1 = Clock::now();
        if (!a.ok() || a->status != 200) {
          ++errors;
          continue;
        }
        const Json j = Json::parse(a->body, nullptr, false);
        const std::string id = j["result"].value("allocation_id", "");
        auto r = c.Call("POST", "/v1/allocations/" + id + "/release", "");
        auto s2 = Clock::now();
        if (!r.ok() || r->status != 200) {
          ++errors;
          continue;
        }
        a_ms.push_back(
            std::chrono::duration<double, std::milli>(s1 - s0).count());
        r_ms.push_back(
            std::chrono::duration<double, std::milli>(s2 - s1).count());
        ++pairs;
      }
      std::lock_guard<std::mutex> lock(mu);
      alloc_ms.insert(alloc_ms.end(), a_ms.begin(), a_ms.end());
      release_ms.insert(release_ms.end(), r_ms.begin(), r_ms.end());
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  Json out;
  out["url"] = url;
  out["clients"] = clients;
  out["seconds"] = took;
  out["allocations"] = pairs.load();
  out["allocations_per_second"] = pairs.load() / took;
  out["errors"] = errors.load();
  out["allocate_ms"] = {{"p50", Percentile(alloc_ms, 0.5)},
                        {"p99", Percentile(alloc_ms, 0.99)}};
  out["release_ms"] = {{"p50", Percentile(release_ms, 0.5)},
                       {"p99", Percentile(release_ms, 0.99)}};
  if (app) {
    const qm::DurableStats st = app->engine().stats();
    out["journal"] = {{"operations", st.operations},
                      {"commits", st.commits},
                      {"operations_per_commit",
                       st.commits ? double(st.operations) / st.commits : 0}};
    (void)app->Stop(std::chrono::seconds(5));
    std::filesystem::remove_all(dir);
  }
  std::cout << out.dump() << std::endl;
  return 0;
}
