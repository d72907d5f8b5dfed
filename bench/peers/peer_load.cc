// qm_peer_load: qm_load's workload (bench/load/load_gen.cc) against a peer
// system instead of `qm serve`. N client threads, each with a connection of
// its own, loop for a fixed time: acquire a slot of a counting semaphore
// with a TTL (capacity at least N, so a grant never waits), then release
// it. Prints one JSON object in qm_load's shape (allocations/s, p50/p99 of
// acquire and release, errors) plus the peer's durability settings and its
// round trips per pair.
//
//   qm_peer_load --peer redis|postgresql|etcd --addr ADDR [--clients 64]
//                [--seconds 10] [--capacity 2*clients] [--ttl 60]
//
// ADDR: host:port for redis and etcd, a libpq URI for postgresql. The
// server must be running; bench/peers.sh starts each one durable on
// loopback. See bench/peers/peer.h for how each peer does the work.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "peers/peer.h"

namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// The same percentile as qm_load's (the element at p * size).
double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p * v.size()));
  std::nth_element(v.begin(), v.begin() + static_cast<ptrdiff_t>(k), v.end());
  return v[k];
}

double Ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

int Usage() {
  std::cerr << "usage: qm_peer_load --peer redis|postgresql|etcd --addr ADDR "
               "[--clients N] [--seconds S] [--capacity N] [--ttl S]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string peer_name;
  qm::bench::PeerOptions options;
  int capacity = 0;
  double seconds = 10;
  if (argc % 2 != 1) return Usage();
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--peer") {
      peer_name = value;
    } else if (flag == "--addr") {
      options.addr = value;
    } else if (flag == "--clients") {
      options.clients = std::atoi(value);
    } else if (flag == "--seconds") {
      seconds = std::atof(value);
    } else if (flag == "--capacity") {
      capacity = std::atoi(value);
    } else if (flag == "--ttl") {
      options.ttl_seconds = std::atoi(value);
    } else {
      return Usage();
    }
  }
  // qm_load gives its server room for twice the clients; the same here.
  options.capacity = capacity > 0 ? capacity : 2 * options.clients;
  if (options.addr.empty() || options.clients < 1 || seconds <= 0 ||
      options.ttl_seconds < 1) {
    return Usage();
  }
  if (options.capacity < options.clients) {
    std::cerr << "qm_peer_load: --capacity must be at least --clients (a "
                 "grant must never wait)\n";
    return 2;
  }

  std::unique_ptr<qm::bench::Peer> peer;
  if (peer_name == "redis") {
    peer = qm::bench::MakeRedisPeer(options);
    if (!peer) {
      std::cerr << "qm_peer_load: built without hiredis (install "
                   "libhiredis-dev and configure again)\n";
      return 1;
    }
  } else if (peer_name == "postgresql") {
    peer = qm::bench::MakePostgresPeer(options);
  } else if (peer_name == "etcd") {
    peer = qm::bench::MakeEtcdPeer(options);
  } else {
    return Usage();
  }
  if (qm::Status s = peer->Setup(); !s.ok()) {
    std::cerr << "qm_peer_load: " << peer_name << " setup: " << s.ToString()
              << "\n";
    return 1;
  }

  // Every client connects before the clock starts.
  std::vector<std::unique_ptr<qm::bench::PeerClient>> conns;
  for (int t = 0; t < options.clients; ++t) {
    auto c = peer->Connect(t);
    if (!c.ok()) {
      std::cerr << "qm_peer_load: " << peer_name
                << " connect: " << c.status().ToString() << "\n";
      return 1;
    }
    conns.push_back(std::move(*c));
  }

  std::atomic<bool> stop{false};
  std::atomic<int64_t> pairs{0}, errors{0};
  std::mutex mu;
  std::vector<double> acquire_ms, release_ms;
  std::string first_error;
  const auto note_error = [&](const qm::Status& s) {
    ++errors;
    std::lock_guard<std::mutex> lock(mu);
    if (first_error.empty()) first_error = s.ToString();
  };
  std::vector<std::thread> threads;
  const auto t0 = Clock::now();
  for (int t = 0; t < options.clients; ++t) {
    threads.emplace_back([&, t] {
      qm::bench::PeerClient& c = *conns[t];
      std::vector<double> a_ms, r_ms;
      const std::string prefix = "c" + std::to_string(t) + "-";
      int64_t n = 0;
      while (!stop) {
        const std::string holder = prefix + std::to_string(n++);
        const auto s0 = Clock::now();
        qm::Status a = c.Acquire(holder);
        const auto s1 = Clock::now();
        if (!a.ok()) {
          note_error(a);
          // A failing server must not turn this loop into a busy spin.
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
          continue;
        }
        qm::Status r = c.Release();
        const auto s2 = Clock::now();
        if (!r.ok()) {
          note_error(r);
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
          continue;
        }
        a_ms.push_back(Ms(s1 - s0));
        r_ms.push_back(Ms(s2 - s1));
        ++pairs;
      }
      std::lock_guard<std::mutex> lock(mu);
      acquire_ms.insert(acquire_ms.end(), a_ms.begin(), a_ms.end());
      release_ms.insert(release_ms.end(), r_ms.begin(), r_ms.end());
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  const double took = std::chrono::duration<double>(Clock::now() - t0).count();
  conns.clear();

  Json out;
  out["peer"] = peer_name;
  out["addr"] = options.addr;
  out["durability"] = peer->durability();
  out["round_trips_per_pair"] = peer->round_trips_per_pair();
  out["clients"] = options.clients;
  out["capacity"] = options.capacity;
  out["ttl_seconds"] = options.ttl_seconds;
  out["seconds"] = took;
  out["allocations"] = pairs.load();
  out["allocations_per_second"] = pairs.load() / took;
  out["errors"] = errors.load();
  if (!first_error.empty()) out["first_error"] = first_error;
  out["allocate_ms"] = {{"p50", Percentile(acquire_ms, 0.5)},
                        {"p99", Percentile(acquire_ms, 0.99)}};
  out["release_ms"] = {{"p50", Percentile(release_ms, 0.5)},
                       {"p99", Percentile(release_ms, 0.99)}};
  std::cout << out.dump() << std::endl;
  return 0;
}
