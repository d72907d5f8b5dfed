// Bytes the benchmark process has allocated on the heap, from whichever
// allocator it is linked with: jemalloc's "stats.allocated" when the
// benchmarks link jemalloc (QM_BENCH_JEMALLOC, as qm itself does), else
// glibc's mallinfo2. For a counter that measures how much heap a structure
// takes (a difference of two readings).
#ifndef QM_BENCH_HEAP_H_
#define QM_BENCH_HEAP_H_

#include <cstddef>
#include <cstdint>

#ifdef QM_BENCH_JEMALLOC
#include <jemalloc/jemalloc.h>
#else
#include <malloc.h>
#endif

namespace qm::bench {

inline size_t HeapBytes() {
#ifdef QM_BENCH_JEMALLOC
  // jemalloc's statistics are a snapshot refreshed by writing "epoch".
  uint64_t epoch = 1;
  size_t len = sizeof(epoch);
  mallctl("epoch", &epoch, &len, &epoch, len);
  size_t allocated = 0;
  len = sizeof(allocated);
  if (mallctl("stats.allocated", &allocated, &len, nullptr, 0) != 0) return 0;
  return allocated;
#else
  return mallinfo2().uordblks;
#endif
}

}  // namespace qm::bench

#endif  // QM_BENCH_HEAP_H_
