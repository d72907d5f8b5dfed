// Timeline: amounts booked over time windows on one counted resource (the
// engine keeps one per counter that future reservations touch). Answers
// "what is the most booked at any instant of [from, to)" without stepping
// through time: an interval tree (intervals ordered by start, each subtree
// annotated with its latest end), so finding the k intervals overlapping a
// window visits only subtrees holding one (at most O(k log n), O(log n + k)
// when they are adjacent in start order), plus O(k log k) to sweep them.
// Ids are non-zero (0 means "exclude none" in MaxOver).
//
// Pure data structure; not thread safe.
#ifndef QM_CORE_TIMELINE_H_
#define QM_CORE_TIMELINE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <tuple>

#include "absl/container/btree_set.h"
#include "absl/functional/function_ref.h"
#include "qm/clock.h"

namespace qm {

class Timeline {
 public:
  Timeline();
  ~Timeline();
  Timeline(Timeline&&) noexcept;
  Timeline& operator=(Timeline&&) noexcept;
  Timeline(const Timeline&) = delete;
  Timeline& operator=(const Timeline&) = delete;

  struct Interval {
    uint64_t id = 0;      // the booking's owner (a reservation)
    Time start{}, end{};  // [start, end), start < end
    int64_t amount = 0;   // > 0
  };

  // Books `amount` over [start, end) for `id`. One id may hold several
  // intervals (the occurrences of a recurring reservation). Ignores empty
  // windows (start >= end) and amounts <= 0. Adding the same (id, start)
  // twice is a caller error, but is tolerated: both intervals are kept and
  // counted, and each Remove(id, start) removes one of them.
  void Add(uint64_t id, Time start, Time end, int64_t amount);
  // Removes the interval of `id` that starts at `start`; false if none. If
  // there are duplicates, removes the one ending first (of equal ends, the
  // one added first).
  bool Remove(uint64_t id, Time start);
  // Removes every interval of `id`; returns how many.
  size_t RemoveAll(uint64_t id);
  // Drops intervals that ended at or before `t`.
  void PruneBefore(Time t);

  // The largest total amount booked at any instant of [from, to), not
  // counting intervals of `exclude` (0 = count all). 0 when nothing
  // overlaps or from >= to.
  int64_t MaxOver(Time from, Time to, uint64_t exclude = 0) const;
  // The total booked at instant `t` (intervals with start <= t < end).
  int64_t At(Time t) const { return MaxOver(t, t + Duration(1)); }
  // Calls `fn` for each interval overlapping [from, to), in start order.
  void ForEachOverlap(Time from, Time to,
                      absl::FunctionRef<void(const Interval&)> fn) const;

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  struct Node;   // a treap node holding one interval
  struct Treap;  // the tree algorithms (static helpers)

  // Identifies one stored interval. `seq` (assigned by Add) tells apart
  // duplicates of the same (id, start, end). The tree orders keys by
  // (start, id, end, seq).
  struct Key {
    Time start{}, end{};
    uint64_t id = 0;
    uint64_t seq = 0;
  };
  // Side index order (id, start, end, seq): Remove and RemoveAll.
  struct ById {
    bool operator()(const Key& a, const Key& b) const {
      return std::tie(a.id, a.start, a.end, a.seq) <
             std::tie(b.id, b.start, b.end, b.seq);
    }
  };
  // Side index order (end, seq): PruneBefore takes from the front.
  struct ByEnd {
    bool operator()(const Key& a, const Key& b) const {
      return std::tie(a.end, a.seq) < std::tie(b.end, b.seq);
    }
  };

  // Removes the interval `key` (which must be stored) from the tree and both
  // side indexes.
  void Erase(const Key& key);

  std::unique_ptr<Node> root_;  // the interval tree
  size_t size_ = 0;
  absl::btree_set<Key, ById> by_id_;
  absl::btree_set<Key, ByEnd> by_end_;
  uint64_t next_seq_ = 0;  // seq of the next Add; also seeds its priority
};

}  // namespace qm

#endif  // QM_CORE_TIMELINE_H_
