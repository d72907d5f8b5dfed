// Fan-out of the engine's committed events to the server's clients: a
// bounded history (so an event stream can resume from Last-Event-ID), live
// subscribers with filters (Server-Sent Events streams, webhooks), and
// one-shot waiters on an allocation (a waiting allocate is answered by the
// event that grants it: pushed, not polled).
//
// The durable engine delivers events after their commit, in sequence order,
// from its writer thread: OnEvent must be quick, so callbacks only queue
// work (a Stream::Send, a post to an event loop).
//
// Thread safety: every method may be called from any thread. Callbacks run
// on the thread that delivers the event (or, for the replay of history, on
// the thread that subscribes), never two at once for one subscriber, and
// never under a lock a caller of this class could hold.
#ifndef QM_SERVER_EVENTS_H_
#define QM_SERVER_EVENTS_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "qm/engine.h"
#include "qm/types.h"

namespace qm::server {

// Which events a subscriber wants (every condition given must hold).
struct EventFilter {
  std::vector<EventType> types;                     // empty = all
  std::string product, workflow_id, allocation_id;  // "" = any
  // When not empty: events of other products are left out (events of no
  // product, such as a pause, pass).
  std::vector<std::string> visible_products;
  bool Matches(const Event& e) const;
};

class EventHub final : public EventSink {
 public:
  // Keeps the last `history` events for resuming streams. Default 100,000.
  explicit EventHub(size_t history = 100000);

  void OnEvent(const Event& event) override;

  // Called for each matching event; returns false to unsubscribe.
  using Callback = std::function<bool(const Event&)>;

  struct Subscription {
    uint64_t id = 0;
    // The subscriber asked to resume after an event that is no longer kept
    // (older than the history, or from before this server started): events
    // between are lost to it. `oldest` is the first seq still kept (0: none
    // kept).
    bool gap = false;
    uint64_t oldest = 0;
  };
  // Delivers the kept events with seq > `after` that match (all of them
  // when `after` is 0 and `replay` is false: none), then every new one,
  // in order and without a gap or a repeat between the two.
  // `on_start` (may be null) is called first, with what the subscription
  // found, before any event is delivered.
  Subscription Subscribe(
      uint64_t after, bool replay, EventFilter filter, Callback callback,
      const std::function<void(const Subscription&)>& on_start = nullptr);
  void Unsubscribe(uint64_t id);

  // Calls `callback` once, at the next event about allocation `id`
  // (granted, preempted, expired, cancelled...). Returns a handle for
  // CancelWait. The caller checks the allocation's state after registering
  // (an event that came before the registration is not replayed).
  uint64_t WaitFor(const std::string& allocation_id,
                   std::function<void(const Event&)> callback);
  // False when the waiter already fired (or never existed).
  bool CancelWait(uint64_t handle);

  // Adds `events` (in seq order, older than any event kept: those of a
  // recovery's journal replay) to the front of the history, for streams
  // that resume from before a restart. Nobody is called: they were
  // delivered before.
  void Preload(const std::vector<Event>& events);

  // The seq of the last event delivered (0: none yet).
  uint64_t last_seq() const;
  size_t subscribers() const;
  size_t waiters() const;

 private:
  struct Sub {
    EventFilter filter;
    Callback callback;
  };
  struct Waiter {
    std::string allocation_id;
    std::function<void(const Event&)> callback;
  };

  const size_t history_limit_;
  mutable std::mutex mu_;
  // Serialises deliveries, so subscribers see one order and a subscription
  // is never called concurrently with itself. Taken before mu_.
  std::mutex deliver_mu_;
  std::deque<Event> history_;
  uint64_t last_seq_ = 0;
  uint64_t next_id_ = 1;
  std::map<uint64_t, std::shared_ptr<Sub>> subs_;
  std::unordered_multimap<std::string, uint64_t> waiting_;  // alloc -> handle
  std::unordered_map<uint64_t, Waiter> waiters_;
};

}  // namespace qm::server

#endif  // QM_SERVER_EVENTS_H_
