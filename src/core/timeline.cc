// Timeline: a treap of intervals keyed by (start, id, end, seq), each node
// annotated with the latest end in its subtree, plus two ordered side indexes
// (by id, by end) so Remove, RemoveAll and PruneBefore never scan the tree.
#include "core/timeline.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace qm {

struct Timeline::Node {
  Interval iv;
  uint64_t seq = 0;
  uint64_t priority = 0;  // heap order: a parent's is >= its children's
  Time max_end{};         // the latest iv.end in this subtree
  std::unique_ptr<Node> left, right;

  Key key() const { return Key{iv.start, iv.end, iv.id, seq}; }
};

// The treap algorithms. Recursion depth is the tree height, O(log n)
// expected since priorities are pseudo-random.
struct Timeline::Treap {
  using Ptr = std::unique_ptr<Node>;

  // Tree order: (start, id, end, seq).
  static bool Less(const Key& a, const Key& b) {
    return std::tie(a.start, a.id, a.end, a.seq) <
           std::tie(b.start, b.id, b.end, b.seq);
  }

  // A pseudo-random priority derived from seq (splitmix64's finalizer).
  static uint64_t Priority(uint64_t seq) {
    uint64_t z = seq + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  // Recomputes n->max_end from n and its children.
  static void Pull(Node* n) {
    n->max_end = n->iv.end;
    if (n->left) n->max_end = std::max(n->max_end, n->left->max_end);
    if (n->right) n->max_end = std::max(n->max_end, n->right->max_end);
  }

  // Splits `t` into the keys < k (`l`) and the keys >= k (`r`).
  static void Split(Ptr t, const Key& k, Ptr& l, Ptr& r) {
    if (!t) {
      l.reset();
      r.reset();
    } else if (Less(t->key(), k)) {
      Split(std::move(t->right), k, t->right, r);
      Pull(t.get());
      l = std::move(t);
    } else {
      Split(std::move(t->left), k, l, t->left);
      Pull(t.get());
      r = std::move(t);
    }
  }

  // Joins two treaps where every key of `a` is less than every key of `b`.
  static Ptr Merge(Ptr a, Ptr b) {
    if (!a) return b;
    if (!b) return a;
    if (a->priority > b->priority) {
      a->right = Merge(std::move(a->right), std::move(b));
      Pull(a.get());
      return a;
    }
    b->left = Merge(std::move(a), std::move(b->left));
    Pull(b.get());
    return b;
  }

  static void Insert(Ptr& t, Ptr n) {
    if (!t) {
      t = std::move(n);
    } else if (n->priority > t->priority) {
      Split(std::move(t), n->key(), n->left, n->right);
      Pull(n.get());
      t = std::move(n);
    } else {
      Ptr& child = Less(n->key(), t->key()) ? t->left : t->right;
      Insert(child, std::move(n));
      Pull(t.get());
    }
  }

  // Removes the node with key `k`; false if there is none.
  static bool Erase(Ptr& t, const Key& k) {
    if (!t) return false;
    bool found = true;
    if (Less(k, t->key())) {
      found = Erase(t->left, k);
    } else if (Less(t->key(), k)) {
      found = Erase(t->right, k);
    } else {
      t = Merge(std::move(t->left), std::move(t->right));
      return true;
    }
    Pull(t.get());
    return found;
  }

  // Calls fn(node) for each node overlapping [from, to), in tree order.
  // Skips subtrees that end by `from` (max_end) and everything right of the
  // first node starting at or after `to`.
  template <typename Fn>
  static void Visit(const Node* n, Time from, Time to, Fn& fn) {
    if (n == nullptr || n->max_end <= from) return;
    Visit(n->left.get(), from, to, fn);
    if (n->iv.start >= to) return;
    if (n->iv.end > from) fn(*n);
    Visit(n->right.get(), from, to, fn);
  }
};

Timeline::Timeline() = default;
Timeline::~Timeline() = default;

Timeline::Timeline(Timeline&& other) noexcept
    : root_(std::move(other.root_)),
      size_(std::exchange(other.size_, 0)),
      by_id_(std::move(other.by_id_)),
      by_end_(std::move(other.by_end_)),
      next_seq_(other.next_seq_) {
  other.by_id_.clear();  // leave `other` empty and usable
  other.by_end_.clear();
}

Timeline& Timeline::operator=(Timeline&& other) noexcept {
  if (this != &other) {
    root_ = std::move(other.root_);
    size_ = std::exchange(other.size_, 0);
    by_id_ = std::move(other.by_id_);
    by_end_ = std::move(other.by_end_);
    next_seq_ = other.next_seq_;
    other.by_id_.clear();
    other.by_end_.clear();
  }
  return *this;
}

void Timeline::Add(uint64_t id, Time start, Time end, int64_t amount) {
  if (start >= end || amount <= 0) return;
  auto node = std::make_unique<Node>();
  node->iv = Interval{id, start, end, amount};
  node->seq = next_seq_++;
  node->priority = Treap::Priority(node->seq);
  node->max_end = end;
  const Key key = node->key();
  Treap::Insert(root_, std::move(node));
  by_id_.insert(key);
  by_end_.insert(key);
  ++size_;
}

void Timeline::Erase(const Key& key) {
  Treap::Erase(root_, key);
  by_id_.erase(key);
  by_end_.erase(key);
  --size_;
}

bool Timeline::Remove(uint64_t id, Time start) {
  // The first key of (id, start) in (id, start, end, seq) order.
  auto it = by_id_.lower_bound(Key{start, Time::min(), id, 0});
  if (it == by_id_.end() || it->id != id || it->start != start) return false;
  Erase(Key(*it));
  return true;
}

size_t Timeline::RemoveAll(uint64_t id) {
  const Key first{Time::min(), Time::min(), id, 0};
  size_t removed = 0;
  for (auto it = by_id_.lower_bound(first); it != by_id_.end() && it->id == id;
       it = by_id_.lower_bound(first)) {
    Erase(Key(*it));
    ++removed;
  }
  return removed;
}

void Timeline::PruneBefore(Time t) {
  while (!by_end_.empty() && by_end_.begin()->end <= t) {
    Erase(Key(*by_end_.begin()));
  }
}

int64_t Timeline::MaxOver(Time from, Time to, uint64_t exclude) const {
  if (from >= to) return 0;
  // Boundaries clipped to [from, to): +amount at the start, -amount at the
  // end. Sorting (time, delta) puts ends before starts at the same instant,
  // which is what half-open intervals need.
  std::vector<std::pair<Time, int64_t>> events;
  auto collect = [&](const Node& n) {
    if (exclude != 0 && n.iv.id == exclude) return;
    events.emplace_back(std::max(n.iv.start, from), n.iv.amount);
    events.emplace_back(std::min(n.iv.end, to), -n.iv.amount);
  };
  Treap::Visit(root_.get(), from, to, collect);
  std::sort(events.begin(), events.end());
  int64_t current = 0, best = 0;
  for (const auto& [time, delta] : events) {
    current += delta;
    best = std::max(best, current);
  }
  return best;
}

void Timeline::ForEachOverlap(
    Time from, Time to, absl::FunctionRef<void(const Interval&)> fn) const {
  if (from >= to) return;
  auto call = [&](const Node& n) { fn(n.iv); };
  Treap::Visit(root_.get(), from, to, call);
}

}  // namespace qm
