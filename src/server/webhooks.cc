#include "server/webhooks.h"

#include <iostream>

#include "api/json_codec.h"
#include "server/http_client.h"

namespace qm::server {

namespace {
constexpr size_t kMaxQueued = 10000;
}  // namespace

struct WebhookSender::Hook {
  WebhookEntry entry;
  std::string base, target;  // "http://host:port", "/path?query"
  uint64_t subscription = 0;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> queue;  // event bodies
  bool stop = false;
  std::atomic<uint64_t> delivered{0}, failed{0}, dropped{0};
  std::thread thread;
};

WebhookSender::WebhookSender(const std::vector<WebhookEntry>& hooks,
                             EventHub* hub)
    : hub_(hub) {
  for (const WebhookEntry& e : hooks) {
    auto h = std::make_unique<Hook>();
    h->entry = e;
    // Split the URL into the server and the request target.
    const size_t scheme = e.url.find("://");
    const size_t slash = e.url.find('/', scheme + 3);
    h->base = slash == std::string::npos ? e.url : e.url.substr(0, slash);
    h->target = slash == std::string::npos ? "/" : e.url.substr(slash);
    EventFilter filter;
    for (int i = 0; i <= static_cast<int>(kLastEventType); ++i) {
      const EventType t = static_cast<EventType>(i);
      for (const std::string& name : e.types) {
        if (name == EventTypeName(t)) filter.types.push_back(t);
      }
    }
    filter.product = e.product;
    Hook* raw = h.get();
    h->subscription =
        hub_->Subscribe(0, false, filter,
                        [raw](const Event& event) {
                          std::lock_guard<std::mutex> lock(raw->mu);
                          if (raw->stop) return false;
                          if (raw->queue.size() >= kMaxQueued) {
                            raw->queue.pop_front();
                            ++raw->dropped;
                          }
                          raw->queue.push_back(api::ToJson(event).dump());
                          raw->cv.notify_one();
                          return true;
                        })
            .id;
    h->thread = std::thread([this, raw] { Run(raw); });
    hooks_.push_back(std::move(h));
  }
}

WebhookSender::~WebhookSender() { Stop(); }

void WebhookSender::Stop() {
  for (auto& h : hooks_) {
    hub_->Unsubscribe(h->subscription);
    {
      std::lock_guard<std::mutex> lock(h->mu);
      h->stop = true;
    }
    h->cv.notify_all();
  }
  for (auto& h : hooks_) {
    if (h->thread.joinable()) h->thread.join();
  }
}

WebhookSender::Stats WebhookSender::stats() const {
  Stats s;
  for (const auto& h : hooks_) {
    s.delivered += h->delivered;
    s.failed += h->failed;
    s.dropped += h->dropped;
  }
  return s;
}

void WebhookSender::Run(Hook* h) {
  ClientOptions o;
  o.url = h->base;
  o.timeout = std::chrono::seconds(10);
  o.follow_redirects = false;
  HttpClient client(o);
  while (true) {
    std::string body;
    {
      std::unique_lock<std::mutex> lock(h->mu);
      h->cv.wait(lock, [&] { return h->stop || !h->queue.empty(); });
      if (h->stop) return;
      body = std::move(h->queue.front());
      h->queue.pop_front();
    }
    Duration backoff = std::chrono::milliseconds(500);
    for (int attempt = 0;; ++attempt) {
      auto r = client.Call("POST", h->target, body);
      if (r.ok() && r->status >= 200 && r->status < 300) {
        ++h->delivered;
        break;
      }
      if (attempt >= h->entry.retries) {
        ++h->failed;
        std::cerr << "qm serve: webhook " << h->entry.url << " gave up on an "
                  << "event after " << attempt + 1 << " attempts ("
                  << (r.ok() ? "HTTP " + std::to_string(r->status)
                             : r.status().message())
                  << ")" << std::endl;
        break;
      }
      std::unique_lock<std::mutex> lock(h->mu);
      if (h->cv.wait_for(lock, backoff, [&] { return h->stop; })) return;
      backoff = std::min<Duration>(backoff * 2, std::chrono::seconds(30));
    }
  }
}

}  // namespace qm::server
