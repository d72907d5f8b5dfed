#include "server/events.h"

#include <algorithm>
#include <utility>

namespace qm::server {

bool EventFilter::Matches(const Event& e) const {
  if (!types.empty() &&
      std::find(types.begin(), types.end(), e.type) == types.end()) {
    return false;
  }
  if (!product.empty() && e.product != product) return false;
  if (!workflow_id.empty() && e.workflow_id != workflow_id) return false;
  if (!allocation_id.empty() && e.allocation_id != allocation_id) return false;
  if (!visible_products.empty() && !e.product.empty() &&
      std::find(visible_products.begin(), visible_products.end(), e.product) ==
          visible_products.end()) {
    return false;
  }
  return true;
}

EventHub::EventHub(size_t history)
    : history_limit_(std::max<size_t>(history, 1)) {}

void EventHub::OnEvent(const Event& event) {
  std::lock_guard<std::mutex> deliver(deliver_mu_);
  std::vector<std::pair<uint64_t, std::shared_ptr<Sub>>> subs;
  std::vector<std::function<void(const Event&)>> fired;
  {
    std::lock_guard<std::mutex> lock(mu_);
    history_.push_back(event);
    if (history_.size() > history_limit_) history_.pop_front();
    last_seq_ = event.seq;
    subs.assign(subs_.begin(), subs_.end());
    if (!event.allocation_id.empty()) {
      auto [from, to] = waiting_.equal_range(event.allocation_id);
      for (auto it = from; it != to; ++it) {
        auto w = waiters_.find(it->second);
        if (w == waiters_.end()) continue;
        fired.push_back(std::move(w->second.callback));
        waiters_.erase(w);
      }
      waiting_.erase(from, to);
    }
  }
  for (auto& callback : fired) callback(event);
  std::vector<uint64_t> done;
  for (const auto& [id, sub] : subs) {
    if (sub->filter.Matches(event) && !sub->callback(event)) done.push_back(id);
  }
  if (!done.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    for (uint64_t id : done) subs_.erase(id);
  }
}

void EventHub::Preload(const std::vector<Event>& events) {
  std::lock_guard<std::mutex> deliver(deliver_mu_);
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t first = history_.empty() ? UINT64_MAX : history_.front().seq;
  // Newest first onto the front, while there is room.
  for (auto it = events.rbegin(); it != events.rend(); ++it) {
    if (history_.size() >= history_limit_) break;
    if (it->seq >= first) continue;
    if (!history_.empty() && it->seq >= history_.front().seq) continue;
    history_.push_front(*it);
  }
  if (!history_.empty()) last_seq_ = std::max(last_seq_, history_.back().seq);
}

EventHub::Subscription EventHub::Subscribe(
    uint64_t after, bool replay, EventFilter filter, Callback callback,
    const std::function<void(const Subscription&)>& on_start) {
  // Holding deliver_mu_ while replaying: no event is delivered between the
  // replay and the registration, so none is missed or repeated.
  std::lock_guard<std::mutex> deliver(deliver_mu_);
  auto sub = std::make_shared<Sub>(Sub{std::move(filter), std::move(callback)});
  Subscription out;
  std::vector<Event> backlog;
  {
    std::lock_guard<std::mutex> lock(mu_);
    out.oldest = history_.empty() ? 0 : history_.front().seq;
    if (replay || after > 0) {
      // A gap: the events right after `after` are no longer kept (or were
      // never seen by this server).
      const uint64_t first_wanted = after + 1;
      if (after < last_seq_ &&
          (history_.empty() || history_.front().seq > first_wanted)) {
        out.gap = true;
      }
      for (const Event& e : history_) {
        if (e.seq > after && sub->filter.Matches(e)) backlog.push_back(e);
      }
    }
  }
  if (on_start) on_start(out);
  bool keep = true;
  for (const Event& e : backlog) {
    if (!sub->callback(e)) {
      keep = false;
      break;
    }
  }
  if (keep) {
    std::lock_guard<std::mutex> lock(mu_);
    out.id = next_id_++;
    subs_.emplace(out.id, std::move(sub));
  }
  return out;
}

void EventHub::Unsubscribe(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  subs_.erase(id);
}

uint64_t EventHub::WaitFor(const std::string& allocation_id,
                           std::function<void(const Event&)> callback) {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t handle = next_id_++;
  waiters_.emplace(handle, Waiter{allocation_id, std::move(callback)});
  waiting_.emplace(allocation_id, handle);
  return handle;
}

bool EventHub::CancelWait(uint64_t handle) {
  std::lock_guard<std::mutex> lock(mu_);
  auto w = waiters_.find(handle);
  if (w == waiters_.end()) return false;
  auto [from, to] = waiting_.equal_range(w->second.allocation_id);
  for (auto it = from; it != to; ++it) {
    if (it->second == handle) {
      waiting_.erase(it);
      break;
    }
  }
  waiters_.erase(w);
  return true;
}

uint64_t EventHub::last_seq() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_seq_;
}

size_t EventHub::subscribers() const {
  std::lock_guard<std::mutex> lock(mu_);
  return subs_.size();
}

size_t EventHub::waiters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return waiters_.size();
}

}  // namespace qm::server
