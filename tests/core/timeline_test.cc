// Tests of Timeline, the interval tree behind future reservations.
#include "core/timeline.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

namespace qm {
namespace {

Time T(int64_t ms) { return Time(Duration(ms)); }

// The intervals ForEachOverlap reports, as (id, start ms, end ms, amount).
using Row = std::tuple<uint64_t, int64_t, int64_t, int64_t>;
std::vector<Row> Overlaps(const Timeline& tl, int64_t from, int64_t to) {
  std::vector<Row> rows;
  tl.ForEachOverlap(T(from), T(to), [&](const Timeline::Interval& iv) {
    rows.emplace_back(iv.id, iv.start.time_since_epoch().count(),
                      iv.end.time_since_epoch().count(), iv.amount);
  });
  return rows;
}

TEST(TimelineTest, EmptyTimelineBooksNothing) {
  Timeline tl;
  EXPECT_TRUE(tl.empty());
  EXPECT_EQ(tl.size(), 0u);
  EXPECT_EQ(tl.MaxOver(T(0), T(100)), 0);
  EXPECT_EQ(tl.At(T(5)), 0);
  EXPECT_TRUE(Overlaps(tl, 0, 100).empty());
  EXPECT_FALSE(tl.Remove(1, T(0)));
  EXPECT_EQ(tl.RemoveAll(1), 0u);
  tl.PruneBefore(T(1000));
  EXPECT_TRUE(tl.empty());
}

TEST(TimelineTest, BooksOneInterval) {
  Timeline tl;
  tl.Add(7, T(10), T(20), 3);
  EXPECT_EQ(tl.size(), 1u);
  EXPECT_EQ(tl.MaxOver(T(0), T(100)), 3);
  EXPECT_EQ(tl.MaxOver(T(12), T(15)), 3);
  EXPECT_EQ(tl.At(T(9)), 0);
  EXPECT_EQ(tl.At(T(10)), 3);
  EXPECT_EQ(tl.At(T(19)), 3);
  EXPECT_EQ(tl.At(T(20)), 0);
  EXPECT_EQ(Overlaps(tl, 0, 100), (std::vector<Row>{{7, 10, 20, 3}}));
}

TEST(TimelineTest, IgnoresEmptyWindowsAndNonPositiveAmounts) {
  Timeline tl;
  tl.Add(1, T(10), T(10), 5);
  tl.Add(1, T(20), T(10), 5);
  tl.Add(1, T(10), T(20), 0);
  tl.Add(1, T(10), T(20), -4);
  EXPECT_TRUE(tl.empty());
  EXPECT_EQ(tl.MaxOver(T(0), T(100)), 0);
}

TEST(TimelineTest, EmptyOrInvertedQueryWindowIsZero) {
  Timeline tl;
  tl.Add(1, T(0), T(100), 5);
  EXPECT_EQ(tl.MaxOver(T(50), T(50)), 0);
  EXPECT_EQ(tl.MaxOver(T(60), T(40)), 0);
  EXPECT_TRUE(Overlaps(tl, 50, 50).empty());
  EXPECT_TRUE(Overlaps(tl, 60, 40).empty());
}

TEST(TimelineTest, IntervalsAreHalfOpen) {
  Timeline tl;
  tl.Add(1, T(10), T(20), 4);
  tl.Add(2, T(20), T(30), 5);
  // Back to back: never both at once.
  EXPECT_EQ(tl.MaxOver(T(0), T(100)), 5);
  EXPECT_EQ(tl.MaxOver(T(10), T(30)), 5);
  // An interval ending exactly at `from` doesn't count...
  EXPECT_EQ(tl.MaxOver(T(20), T(25)), 5);
  EXPECT_EQ(Overlaps(tl, 20, 25), (std::vector<Row>{{2, 20, 30, 5}}));
  // ...nor one starting exactly at `to`.
  EXPECT_EQ(tl.MaxOver(T(15), T(20)), 4);
  EXPECT_EQ(Overlaps(tl, 15, 20), (std::vector<Row>{{1, 10, 20, 4}}));
  EXPECT_EQ(tl.MaxOver(T(0), T(10)), 0);
  EXPECT_EQ(tl.MaxOver(T(30), T(40)), 0);
  // One millisecond on each side of the boundary.
  EXPECT_EQ(tl.MaxOver(T(19), T(21)), 5);
  EXPECT_EQ(Overlaps(tl, 19, 21).size(), 2u);
}

TEST(TimelineTest, ExcludeSkipsOneId) {
  Timeline tl;
  tl.Add(1, T(0), T(100), 10);
  tl.Add(1, T(200), T(300), 10);  // a second occurrence of id 1
  tl.Add(2, T(50), T(250), 3);
  EXPECT_EQ(tl.MaxOver(T(0), T(300)), 13);
  EXPECT_EQ(tl.MaxOver(T(0), T(300), /*exclude=*/1), 3);
  EXPECT_EQ(tl.MaxOver(T(0), T(300), /*exclude=*/2), 10);
  EXPECT_EQ(tl.MaxOver(T(0), T(300), /*exclude=*/99), 13);
  EXPECT_EQ(tl.MaxOver(T(0), T(40), /*exclude=*/1), 0);
}

TEST(TimelineTest, NestedIntervalsAdd) {
  Timeline tl;
  tl.Add(1, T(0), T(100), 1);
  tl.Add(2, T(10), T(90), 2);
  tl.Add(3, T(20), T(80), 4);
  tl.Add(4, T(30), T(70), 8);
  EXPECT_EQ(tl.MaxOver(T(0), T(100)), 15);
  EXPECT_EQ(tl.MaxOver(T(0), T(30)), 7);
  EXPECT_EQ(tl.MaxOver(T(70), T(100)), 7);
  EXPECT_EQ(tl.MaxOver(T(90), T(100)), 1);
  EXPECT_EQ(tl.At(T(50)), 15);
  EXPECT_EQ(tl.At(T(85)), 3);
}

TEST(TimelineTest, StaggeredIntervalsPeakWhereTheyOverlap) {
  Timeline tl;
  tl.Add(1, T(0), T(30), 5);
  tl.Add(2, T(20), T(50), 6);
  tl.Add(3, T(40), T(70), 7);
  // Pairs overlap, never all three.
  EXPECT_EQ(tl.MaxOver(T(0), T(70)), 13);
  EXPECT_EQ(tl.MaxOver(T(0), T(40)), 11);
  EXPECT_EQ(tl.MaxOver(T(30), T(40)), 6);
  EXPECT_EQ(tl.MaxOver(T(25), T(45)), 13);
  EXPECT_EQ(Overlaps(tl, 25, 45),
            (std::vector<Row>{{1, 0, 30, 5}, {2, 20, 50, 6}, {3, 40, 70, 7}}));
}

TEST(TimelineTest, ManyIntervals) {
  Timeline tl;
  // 1000 unit bookings of 10 ms starting every ms: 10 at once in the middle.
  for (int i = 0; i < 1000; ++i) tl.Add(i + 1, T(i), T(i + 10), 1);
  EXPECT_EQ(tl.size(), 1000u);
  EXPECT_EQ(tl.MaxOver(T(0), T(2000)), 10);
  EXPECT_EQ(tl.At(T(0)), 1);
  EXPECT_EQ(tl.At(T(5)), 6);
  EXPECT_EQ(tl.At(T(500)), 10);
  EXPECT_EQ(tl.At(T(1005)), 4);
  EXPECT_EQ(Overlaps(tl, 500, 501).size(), 10u);
  EXPECT_EQ(tl.MaxOver(T(500), T(501), /*exclude=*/495), 9);
}

TEST(TimelineTest, OverlapsComeInStartOrder) {
  Timeline tl;
  tl.Add(5, T(30), T(40), 1);
  tl.Add(2, T(10), T(40), 1);
  tl.Add(9, T(20), T(40), 1);
  tl.Add(1, T(20), T(35), 1);
  tl.Add(1, T(20), T(30), 1);  // same (id, start), earlier end
  EXPECT_EQ(Overlaps(tl, 0, 100), (std::vector<Row>{{2, 10, 40, 1},
                                                    {1, 20, 30, 1},
                                                    {1, 20, 35, 1},
                                                    {9, 20, 40, 1},
                                                    {5, 30, 40, 1}}));
}

TEST(TimelineTest, RemoveTakesOneIntervalOfAnId) {
  Timeline tl;
  tl.Add(1, T(0), T(10), 2);
  tl.Add(1, T(100), T(110), 3);
  tl.Add(2, T(0), T(10), 4);
  EXPECT_FALSE(tl.Remove(1, T(50)));  // no such start
  EXPECT_FALSE(tl.Remove(3, T(0)));   // no such id
  EXPECT_TRUE(tl.Remove(1, T(0)));
  EXPECT_EQ(tl.size(), 2u);
  EXPECT_EQ(tl.At(T(5)), 4);
  EXPECT_EQ(tl.At(T(105)), 3);
  EXPECT_FALSE(tl.Remove(1, T(0)));  // already gone
  EXPECT_TRUE(tl.Remove(1, T(100)));
  EXPECT_TRUE(tl.Remove(2, T(0)));
  EXPECT_TRUE(tl.empty());
  EXPECT_EQ(tl.MaxOver(T(0), T(200)), 0);
}

TEST(TimelineTest, RemoveAllTakesEveryIntervalOfAnId) {
  Timeline tl;
  for (int i = 0; i < 10; ++i) tl.Add(7, T(i * 100), T(i * 100 + 50), 5);
  tl.Add(6, T(0), T(1000), 1);
  tl.Add(8, T(0), T(1000), 2);
  EXPECT_EQ(tl.MaxOver(T(0), T(1000)), 8);
  EXPECT_EQ(tl.RemoveAll(7), 10u);
  EXPECT_EQ(tl.size(), 2u);
  EXPECT_EQ(tl.MaxOver(T(0), T(1000)), 3);
  EXPECT_EQ(tl.RemoveAll(7), 0u);
  EXPECT_EQ(tl.RemoveAll(6), 1u);
  EXPECT_EQ(tl.MaxOver(T(0), T(1000)), 2);
}

TEST(TimelineTest, PruneBeforeDropsEndedIntervals) {
  Timeline tl;
  tl.Add(1, T(0), T(10), 1);
  tl.Add(2, T(5), T(20), 2);
  tl.Add(3, T(15), T(30), 4);
  tl.PruneBefore(T(9));  // nothing has ended yet
  EXPECT_EQ(tl.size(), 3u);
  tl.PruneBefore(T(10));  // [0, 10) ended at 10
  EXPECT_EQ(tl.size(), 2u);
  EXPECT_EQ(tl.MaxOver(T(0), T(100)), 6);
  EXPECT_EQ(tl.At(T(7)), 2);
  tl.PruneBefore(T(25));  // [5, 20) ended; [15, 30) is still running
  EXPECT_EQ(tl.size(), 1u);
  EXPECT_EQ(tl.At(T(25)), 4);
  EXPECT_FALSE(tl.Remove(2, T(5)));
  EXPECT_EQ(tl.RemoveAll(1), 0u);
  tl.PruneBefore(T(30));
  EXPECT_TRUE(tl.empty());
}

TEST(TimelineTest, DuplicateIdAndStartAreBothKept) {
  Timeline tl;
  tl.Add(1, T(0), T(20), 3);
  tl.Add(1, T(0), T(10), 4);
  tl.Add(1, T(0), T(10), 5);  // identical window, too
  EXPECT_EQ(tl.size(), 3u);
  EXPECT_EQ(tl.At(T(5)), 12);
  EXPECT_EQ(tl.At(T(15)), 3);
  // Each Remove takes one: the one ending first, of equal ends the oldest.
  EXPECT_TRUE(tl.Remove(1, T(0)));
  EXPECT_EQ(tl.At(T(5)), 8);
  EXPECT_TRUE(tl.Remove(1, T(0)));
  EXPECT_EQ(tl.At(T(5)), 3);
  EXPECT_EQ(tl.At(T(15)), 3);
  EXPECT_TRUE(tl.Remove(1, T(0)));
  EXPECT_FALSE(tl.Remove(1, T(0)));
  EXPECT_TRUE(tl.empty());

  tl.Add(1, T(0), T(10), 4);
  tl.Add(1, T(0), T(10), 4);
  EXPECT_EQ(tl.RemoveAll(1), 2u);
  EXPECT_TRUE(tl.empty());
}

TEST(TimelineTest, MovesItsContents) {
  Timeline a;
  a.Add(1, T(0), T(10), 2);
  a.Add(2, T(5), T(15), 3);
  Timeline b(std::move(a));
  EXPECT_EQ(b.size(), 2u);
  EXPECT_EQ(b.MaxOver(T(0), T(20)), 5);
  EXPECT_TRUE(b.Remove(1, T(0)));
  // The moved-from timeline is empty and still usable.
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(a.MaxOver(T(0), T(20)), 0);
  EXPECT_FALSE(a.Remove(2, T(5)));
  a.Add(3, T(0), T(10), 7);
  EXPECT_EQ(a.At(T(1)), 7);

  Timeline c;
  c.Add(9, T(0), T(100), 1);
  c = std::move(b);
  EXPECT_EQ(c.size(), 1u);
  EXPECT_EQ(c.At(T(10)), 3);
  EXPECT_EQ(c.RemoveAll(9), 0u);
  EXPECT_TRUE(b.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(b.RemoveAll(2), 0u);
  b.Add(4, T(0), T(10), 1);
  EXPECT_EQ(b.size(), 1u);
}

TEST(TimelineTest, SortedInsertionsStayBalanced) {
  // Starts in increasing order would make a plain search tree a list (and
  // its recursive destructor overflow the stack).
  Timeline tl;
  constexpr int kN = 200000;
  for (int i = 0; i < kN; ++i) tl.Add(1, T(i * 10), T(i * 10 + 15), 1);
  EXPECT_EQ(tl.size(), static_cast<size_t>(kN));
  EXPECT_EQ(tl.MaxOver(T(0), T(kN * 10)), 2);
  EXPECT_EQ(Overlaps(tl, 50000, 50001).size(), 2u);
  tl.PruneBefore(T(kN * 5 + 5));  // the first half end by then
  EXPECT_EQ(tl.size(), static_cast<size_t>(kN / 2));
}

// A list of intervals, searched the slow and obvious way.
class BruteTimeline {
 public:
  struct Entry {
    uint64_t id;
    int64_t start, end, amount;
    uint64_t seq;  // order of addition, to order duplicates
  };

  void Add(uint64_t id, int64_t start, int64_t end, int64_t amount) {
    if (start >= end || amount <= 0) return;
    entries_.push_back({id, start, end, amount, next_seq_++});
  }
  bool Remove(uint64_t id, int64_t start) {
    auto best = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->id != id || it->start != start) continue;
      if (best == entries_.end() ||
          std::tie(it->end, it->seq) < std::tie(best->end, best->seq)) {
        best = it;
      }
    }
    if (best == entries_.end()) return false;
    entries_.erase(best);
    return true;
  }
  size_t RemoveAll(uint64_t id) {
    return std::erase_if(entries_, [&](const Entry& e) { return e.id == id; });
  }
  void PruneBefore(int64_t t) {
    std::erase_if(entries_, [&](const Entry& e) { return e.end <= t; });
  }
  // Steps through every millisecond of [from, to).
  int64_t MaxOver(int64_t from, int64_t to, uint64_t exclude) const {
    int64_t best = 0;
    for (int64_t t = from; t < to; ++t) {
      int64_t sum = 0;
      for (const Entry& e : entries_) {
        if (e.start <= t && t < e.end && (exclude == 0 || e.id != exclude)) {
          sum += e.amount;
        }
      }
      best = std::max(best, sum);
    }
    return best;
  }
  std::vector<Row> Overlaps(int64_t from, int64_t to) const {
    std::vector<Entry> hits;
    for (const Entry& e : entries_) {
      if (e.start < to && from < e.end && from < to) hits.push_back(e);
    }
    std::sort(hits.begin(), hits.end(), [](const Entry& a, const Entry& b) {
      return std::tie(a.start, a.id, a.end, a.seq) <
             std::tie(b.start, b.id, b.end, b.seq);
    });
    std::vector<Row> rows;
    for (const Entry& e : hits) {
      rows.emplace_back(e.id, e.start, e.end, e.amount);
    }
    return rows;
  }
  size_t size() const { return entries_.size(); }
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  std::vector<Entry> entries_;
  uint64_t next_seq_ = 0;
};

TEST(TimelineTest, MatchesBruteForceOnRandomOperations) {
  std::mt19937_64 rng(20260126);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  Timeline tl;
  BruteTimeline brute;
  int64_t now = 0;  // PruneBefore moves forward, like the engine's clock
  for (int step = 0; step < 5000; ++step) {
    const int64_t op = uniform(0, 99);
    // Small id and start ranges, so duplicate (id, start) pairs happen.
    const uint64_t id = uniform(1, 12);
    if (op < 55) {
      const int64_t start = now + uniform(0, 300);
      const int64_t end = start + uniform(-2, 80);  // sometimes empty
      const int64_t amount = uniform(-1, 20);       // sometimes ignored
      tl.Add(id, Time(Duration(start)), Time(Duration(end)), amount);
      brute.Add(id, start, end, amount);
    } else if (op < 75) {
      // Usually a stored start, sometimes one that isn't.
      int64_t start = now + uniform(0, 300);
      if (brute.size() > 0 && uniform(0, 3) > 0) {
        const auto& e = brute.entries()[uniform(0, brute.size() - 1)];
        start = e.start;
        const bool removed = tl.Remove(e.id, T(start));
        ASSERT_EQ(removed, brute.Remove(e.id, start)) << "step " << step;
      } else {
        ASSERT_EQ(tl.Remove(id, T(start)), brute.Remove(id, start))
            << "step " << step;
      }
    } else if (op < 79) {
      ASSERT_EQ(tl.RemoveAll(id), brute.RemoveAll(id)) << "step " << step;
    } else if (op < 84) {
      now += uniform(0, 25);
      tl.PruneBefore(T(now));
      brute.PruneBefore(now);
    } else if (op < 86) {
      tl.PruneBefore(T(now));  // again: nothing is due
      brute.PruneBefore(now);
    } else if (op < 87 && uniform(0, 9) == 0) {
      Timeline moved(std::move(tl));  // round trip through a move
      tl = std::move(moved);
    }
    ASSERT_EQ(tl.size(), brute.size()) << "step " << step;

    // Query a few windows, some empty or inverted.
    for (int q = 0; q < 3; ++q) {
      const int64_t from = now + uniform(-20, 380);
      const int64_t to = from + uniform(-5, 120);
      const uint64_t exclude = uniform(0, 2) == 0 ? 0 : uniform(1, 13);
      ASSERT_EQ(tl.MaxOver(T(from), T(to), exclude),
                brute.MaxOver(from, to, exclude))
          << "step " << step << " [" << from << ", " << to << ") exclude "
          << exclude;
      ASSERT_EQ(Overlaps(tl, from, to), brute.Overlaps(from, to))
          << "step " << step << " [" << from << ", " << to << ")";
      ASSERT_EQ(tl.At(T(from)), brute.MaxOver(from, from + 1, 0))
          << "step " << step << " at " << from;
    }
  }
}

}  // namespace
}  // namespace qm
