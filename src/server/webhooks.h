// Posts events to the webhook URLs of the config's `server.webhooks` as
// they happen: each matching event as its JSON (the shape of GET
// /v1/events' data) in a POST, in order per webhook, retried with
// exponential backoff (0.5 s, 1 s, 2 s...) up to the webhook's `retries`
// when the receiver is unreachable or answers other than 2xx.
//
// Never slows the engine: events are queued per webhook (at most 10,000;
// past that the oldest are dropped and counted) and sent by one thread per
// webhook.
//
// Thread safety: Stats may be called from any thread.
#ifndef QM_SERVER_WEBHOOKS_H_
#define QM_SERVER_WEBHOOKS_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "server/events.h"
#include "server/server_config.h"

namespace qm::server {

class WebhookSender {
 public:
  // Subscribes to `hub` (which must outlive this) for each webhook.
  WebhookSender(const std::vector<WebhookEntry>& hooks, EventHub* hub);
  ~WebhookSender();  // Stop()
  WebhookSender(const WebhookSender&) = delete;
  WebhookSender& operator=(const WebhookSender&) = delete;

  // Unsubscribes and stops the senders (an attempt in progress finishes;
  // what is still queued is dropped).
  void Stop();

  struct Stats {
    uint64_t delivered = 0;  // POSTs answered 2xx
    uint64_t failed = 0;     // events given up after every retry
    uint64_t dropped = 0;    // events dropped because the queue was full
  };
  // Totals over every webhook.
  Stats stats() const;

 private:
  struct Hook;
  void Run(Hook* h);

  EventHub* const hub_;
  std::vector<std::unique_ptr<Hook>> hooks_;
};

}  // namespace qm::server

#endif  // QM_SERVER_WEBHOOKS_H_
