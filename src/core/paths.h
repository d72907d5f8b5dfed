// Path locks: lexical path normalisation, glob matching and overlap, and the
// lock table (a trie of path components) the engine uses to find conflicting
// locks without scanning them all. Pure: no file system access.
//
// Paths here are *normalised*: relative to the workspace root, components
// joined by '/', no "." / ".." / empty components, no leading or trailing
// slash; "" is the root itself. A component holding '*', '?' or '[' makes
// the path a glob:
//   *     any run of characters inside one component (not '/')
//   ?     one character (not '/')
//   [..]  one character of a set: [abc], ranges [a-z], negation [!a] or [^a]
//   **    as a whole component: zero or more whole components
// A lock covers its path and everything below it (a directory lock covers
// the directory's files); a glob lock covers every path it matches and
// everything below those. Two locks conflict when they cover a common path
// and at least one of them is exclusive.
//
// Thread safety: LockTable is not thread safe (owned by the engine).
#ifndef QM_CORE_PATHS_H_
#define QM_CORE_PATHS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "qm/status.h"

namespace qm::paths {

// Normalises `path` against `root` (an absolute, already normalised path
// such as "/work/repo", or "" for no root). Relative paths are resolved
// against the root; absolute paths must lie inside it. Returns the
// normalised relative path ("" for the root itself).
//
// INVALID_REQUEST naming `field` (e.g. "exclusive_access[3]") when the path
// is empty, holds a NUL byte, is longer than 4096 bytes, climbs out of the
// root with "..", is absolute but outside the root (or absolute while there
// is no root), or is a malformed glob (an unclosed '[', "**" inside a
// component such as "a**b", a reversed range "[z-a]", a class matching no
// character, ".." right after a glob component). Once an absolute path has
// reached the root, or for any relative path, a ".." above the root is
// refused even if later components come back in ("../repo/x").
StatusOr<std::string> Normalize(std::string_view root, std::string_view path,
                                std::string_view field);

// The same, without copying a path that is already normal: returns `path`
// itself, or the normalised text stored in `*scratch` (so the result is
// valid while both are). The result is never longer than `path`.
StatusOr<std::string_view> NormalizeView(std::string_view root,
                                         std::string_view path,
                                         std::string_view field,
                                         std::string* scratch);

// Normalises a configured workspace root: must be absolute; "." and ".."
// resolved lexically; no trailing slash ("/" stays "/"). INVALID_REQUEST
// naming `field` otherwise.
StatusOr<std::string> NormalizeRoot(std::string_view root,
                                    std::string_view field);

// Whether normalised `path` holds a glob component.
bool IsGlob(std::string_view path);

// Whether glob (or plain path) `pattern` matches normalised `path` exactly.
bool GlobMatch(std::string_view pattern, std::string_view path);

// Whether locks on normalised `a` and `b` (each a plain path or a glob)
// cover a common path: some path matched by one is equal to, an ancestor
// of, or a descendant of some path matched by the other. Lexical: any plain
// path may be a directory, so "**/*.md" overlaps "src/main.cc" (it matches
// "src/main.cc/x.md"), and a glob opening with "**" overlaps every path.
bool Overlap(std::string_view a, std::string_view b);

// The locks currently taken (or claimed), by owner id. It records; it does
// not decide: conflicting locks may coexist (advisory locking, or the
// engine's table of queued claims).
//
// A tree of path components (a node per path that holds a lock or lies above
// one, with per-subtree lock counts), plus one hash index from each node's
// full normalised path to the node: a plain path is found in one probe (two
// when its own node is missing but its parent's exists, O(log depth) at
// worst), not one per component.
class LockTable {
 public:
  LockTable();
  ~LockTable();
  LockTable(const LockTable&) = delete;
  LockTable& operator=(const LockTable&) = delete;

  struct Hit {
    uint64_t owner = 0;
    std::string_view path;  // valid until the table changes
    bool exclusive = false;
  };

  // A normalised path (plain or glob) with the hash the table looks it up
  // by, computed once: a caller that looks one path up several times (the
  // engine checks a request's locks, then takes them) makes its Key once.
  struct Key {
    Key() = default;
    explicit Key(std::string_view p);
    // With the hashes and prefix size Key(p) computed for the same path.
    Key(std::string_view p, size_t h, size_t ph, uint32_t ps)
        : path(p), hash(h), parent_hash(ph), prefix_size(ps) {}
    // The plain prefix: all of a plain path; a glob's components before its
    // first glob component.
    std::string_view prefix() const { return path.substr(0, prefix_size); }
    std::string_view path;
    size_t hash = 0;  // of prefix()
    // Of that prefix's parent (a lookup that misses the prefix tries it
    // next); 0 when the prefix has one component or none.
    size_t parent_hash = 0;
    uint32_t prefix_size = 0;  // of prefix() (paths are at most 4 KiB)
  };

  struct Node;  // one path component; defined in paths.cc
  // Where a lock was added: pass it back to Remove to skip the lookup.
  // Valid until that lock is removed.
  using Handle = Node*;

  // Where a path's lookup ended (its node, or the deepest node on the way
  // to it), recorded by ForEachConflict so that an Add of the same path
  // right after (the engine checks a request's locks, then takes them)
  // skips the lookup. A cache: Add checks that it is still current (same
  // table, no node deleted since, and no node created below where it
  // ended) and looks the path up again when it is not. Default: empty.
  struct Probe {
    const LockTable* table = nullptr;
    Node* node = nullptr;
    Node* first_child = nullptr;  // node's first child when probed
    uint64_t deletions = 0;       // the table's deletions_ when probed
    size_t hash = 0;              // of the path (the glob's fixed prefix)
    bool exact = false;           // node is the path's own
  };

  // Adds a lock of `owner` on normalised `path` (plain or glob). Adding the
  // same (path, mode, owner) twice records it twice. `probe`, when given,
  // is one that ForEachConflict recorded for the same `path`.
  Handle Add(std::string_view path, bool exclusive, uint64_t owner,
             const Probe* probe = nullptr) {
    return Add(Key(path), exclusive, owner, probe);
  }
  Handle Add(const Key& key, bool exclusive, uint64_t owner,
             const Probe* probe = nullptr);
  // Removes one lock added with the same arguments; false if there is none.
  bool Remove(std::string_view path, bool exclusive, uint64_t owner);
  // The same for a lock whose Add returned `at` (no lookup).
  bool Remove(Handle at, std::string_view path, bool exclusive, uint64_t owner);

  // Calls `fn` for every lock that conflicts with a lock on `path` in mode
  // `exclusive` (they overlap and at least one is exclusive), skipping locks
  // of `self` (0 = skip none), until `fn` returns false. For a plain path
  // the cost is one or two index probes (O(log depth) at worst), a step per
  // ancestor, plus the conflicting locks and the globs stored on its
  // ancestors; it never visits unrelated parts of the tree. The order is
  // deterministic: the locks on the ancestors-or-self of `path` (of its prefix
  // before the first glob component) from the root down, then those below it
  // depth first, children in byte order of their names; on each node its plain
  // locks, then the globs stored there, each in the order they were added.
  // When `probe` is given, records there where the lookup of `path` ended
  // (left empty when the table holds nothing that could conflict).
  void ForEachConflict(std::string_view path, bool exclusive, uint64_t self,
                       absl::FunctionRef<bool(const Hit&)> fn,
                       Probe* probe = nullptr) const {
    ForEachConflict(Key(path), exclusive, self, fn, probe);
  }
  void ForEachConflict(const Key& key, bool exclusive, uint64_t self,
                       absl::FunctionRef<bool(const Hit&)> fn,
                       Probe* probe = nullptr) const;

  // Starts loading the memory a lookup of `path` (and of its parent) will
  // read, so that the cache misses of several paths overlap instead of
  // following one another: the engine calls it for each of a request's
  // paths before checking them. Changes nothing; a hint only.
  void Prefetch(const Key& key) const;

  // Calls `fn` for every lock that covers plain path `path` (a lock on it or
  // an ancestor, or a glob matching it or an ancestor), until `fn` returns
  // false, from the root down. Used for fencing checks.
  void ForEachCovering(std::string_view path,
                       absl::FunctionRef<bool(const Hit&)> fn) const;

  // Calls `fn` for every lock recorded, in an order that reproduces the
  // table when the locks are Add-ed again in that order into an empty one:
  // the nodes depth first from the root, children in byte order of their
  // names; on each node its plain locks, then the globs stored there, each
  // in the order they were added (the per-node order ForEachConflict
  // reports in). For saving a table (the engine's state snapshots). O(locks
  // + nodes), plus sorting each node's children.
  void ForEachLock(absl::FunctionRef<void(const Hit&)> fn) const;

  // Number of locks recorded.
  size_t size() const { return size_; }

 private:
  struct Query;  // the state of one ForEachConflict search
  struct Index;  // the root node and the index of the others by path
  std::unique_ptr<Index> index_;
  size_t size_ = 0;
  uint64_t deletions_ = 0;  // nodes deleted so far (Probe validity)
};

}  // namespace qm::paths

#endif  // QM_CORE_PATHS_H_
