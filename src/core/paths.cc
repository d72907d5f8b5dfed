#include "core/paths.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/hash/hash.h"
#include "core/text.h"
#include "qm/types.h"

namespace qm::paths {
namespace {

bool IsGlobComponent(std::string_view component) {
  for (const char c : component) {
    if (c == '*' || c == '?' || c == '[') return true;
  }
  return false;
}

// Walking the components of a path without splitting it: `pos` is where a
// component starts, or past the end (size() + 1) when there is none left.
// "" has no components.
size_t FirstComponent(std::string_view path) { return path.empty() ? 1 : 0; }
bool AtEnd(std::string_view path, size_t pos) { return pos > path.size(); }
size_t ComponentEnd(std::string_view path, size_t pos) {
  const size_t slash = path.find('/', pos);
  return slash == std::string_view::npos ? path.size() : slash;
}
std::string_view ComponentAt(std::string_view path, size_t pos) {
  return path.substr(pos, ComponentEnd(path, pos) - pos);
}
size_t NextComponent(std::string_view path, size_t pos) {
  return ComponentEnd(path, pos) + 1;
}

// The same as a forward iterator that finds each '/' once.
class Cursor {
 public:
  explicit Cursor(std::string_view path)
      : path_(path), pos_(FirstComponent(path)) {
    FindEnd();
  }
  bool Done() const { return pos_ > path_.size(); }
  std::string_view Get() const {
    return std::string_view(path_.data() + pos_, end_ - pos_);
  }
  // Where the current component ends in the path.
  size_t End() const { return end_; }
  size_t Begin() const { return pos_; }
  void Next() {
    pos_ = end_ + 1;
    FindEnd();
  }

 private:
  void FindEnd() {
    if (Done()) return;
    const void* slash =
        std::memchr(path_.data() + pos_, '/', path_.size() - pos_);
    end_ = slash ? static_cast<size_t>(static_cast<const char*>(slash) -
                                       path_.data())
                 : path_.size();
  }

  std::string_view path_;
  size_t pos_;
  size_t end_ = 0;
};

// The components of normalised `path` ("" has none).
using Components = absl::InlinedVector<std::string_view, 16>;
Components Split(std::string_view path) {
  Components out;
  for (Cursor c(path); !c.Done(); c.Next()) out.push_back(c.Get());
  return out;
}

// Whether plain path `a` is `b` or an ancestor of it.
bool IsAncestorOrSelf(std::string_view a, std::string_view b) {
  if (a.empty()) return true;
  if (b.size() < a.size() || b.compare(0, a.size(), a) != 0) return false;
  return b.size() == a.size() || b[a.size()] == '/';
}

// A set of bytes.
class ByteSet {
 public:
  // Every byte a path component may hold: all but NUL and '/'.
  static ByteSet Universe() {
    ByteSet s;
    s.AddRange(1, 255);
    s.Remove('/');
    return s;
  }

  void Add(unsigned char c) { words_[c >> 6] |= uint64_t{1} << (c & 63); }
  void Remove(unsigned char c) { words_[c >> 6] &= ~(uint64_t{1} << (c & 63)); }
  void AddRange(unsigned char lo, unsigned char hi) {
    for (unsigned c = lo; c <= hi; ++c) Add(static_cast<unsigned char>(c));
  }
  bool Has(unsigned char c) const { return (words_[c >> 6] >> (c & 63)) & 1; }
  bool Empty() const {
    return (words_[0] | words_[1] | words_[2] | words_[3]) == 0;
  }
  bool Intersects(const ByteSet& o) const {
    for (size_t i = 0; i < words_.size(); ++i) {
      if (words_[i] & o.words_[i]) return true;
    }
    return false;
  }
  // This set minus `o`.
  ByteSet Minus(const ByteSet& o) const {
    ByteSet s;
    for (size_t i = 0; i < words_.size(); ++i) {
      s.words_[i] = words_[i] & ~o.words_[i];
    }
    return s;
  }
  ByteSet Intersect(const ByteSet& o) const {
    ByteSet s;
    for (size_t i = 0; i < words_.size(); ++i) {
      s.words_[i] = words_[i] & o.words_[i];
    }
    return s;
  }

 private:
  std::array<uint64_t, 4> words_{};
};

const ByteSet& Universe() {
  static const ByteSet kUniverse = ByteSet::Universe();
  return kUniverse;
}

// A bracket expression "[...]" of a glob component.
struct CharClass {
  ByteSet set;            // the bytes it matches (within Universe())
  size_t end = 0;         // index just past the closing ']'
  bool reversed = false;  // it holds a range such as "z-a" (matches none)
};

// Parses the class opening at `pattern[start]` ('['): an optional '!' or
// '^' negates it; a ']' right after the '[' (and the negation) is a member,
// not the end; "a-z" is a range. False when there is no closing ']', in
// which case the '[' is an ordinary character for matching (Normalize
// refuses it).
bool ParseClass(std::string_view pattern, size_t start, CharClass* out) {
  size_t i = start + 1;
  bool negate = false;
  if (i < pattern.size() && (pattern[i] == '!' || pattern[i] == '^')) {
    negate = true;
    ++i;
  }
  ByteSet set;
  bool reversed = false;
  for (bool first = true; i < pattern.size(); first = false) {
    const auto c = static_cast<unsigned char>(pattern[i]);
    if (c == ']' && !first) {
      out->set = negate ? Universe().Minus(set) : set.Intersect(Universe());
      out->end = i + 1;
      out->reversed = reversed;
      return true;
    }
    if (i + 2 < pattern.size() && pattern[i + 1] == '-' &&
        pattern[i + 2] != ']') {
      const auto hi = static_cast<unsigned char>(pattern[i + 2]);
      if (c <= hi) {
        set.AddRange(c, hi);
      } else {
        reversed = true;
      }
      i += 3;
    } else {
      set.Add(c);
      ++i;
    }
  }
  return false;
}

// Whether component pattern `pattern` ('*', '?', classes; "**" is just a
// '*' here) matches component `text`. Backtracks to the last '*' only,
// which is enough because a '*' absorbs any run: O(|pattern| * |text|)
// at worst, no allocation.
bool MatchComponent(std::string_view pattern, std::string_view text) {
  size_t p = 0;
  size_t t = 0;
  size_t star_p = std::string_view::npos;  // pattern index after the last '*'
  size_t star_t = 0;  // text index that '*' was last tried to end at
  while (t < text.size()) {
    if (p < pattern.size()) {
      const char c = pattern[p];
      if (c == '*') {
        star_p = ++p;
        star_t = t;
        continue;
      }
      const auto ch = static_cast<unsigned char>(text[t]);
      bool ok;
      size_t next = p + 1;
      CharClass cls;
      if (c == '?') {
        ok = Universe().Has(ch);
      } else if (c == '[' && ParseClass(pattern, p, &cls)) {
        ok = cls.set.Has(ch);
        next = cls.end;
      } else {
        ok = c == text[t];
      }
      if (ok) {
        p = next;
        ++t;
        continue;
      }
    }
    if (star_p == std::string_view::npos) return false;
    p = star_p;
    t = ++star_t;
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

// One element of a component pattern: a '*' (a run of them) or one byte
// from a set.
struct Element {
  bool star = false;
  ByteSet set;
};

void ParseElements(std::string_view pattern, std::vector<Element>* out) {
  out->clear();
  for (size_t i = 0; i < pattern.size();) {
    const char c = pattern[i];
    if (c == '*') {
      if (out->empty() || !out->back().star) out->push_back({true, {}});
      ++i;
      continue;
    }
    Element e;
    CharClass cls;
    if (c == '?') {
      e.set = Universe();
      ++i;
    } else if (c == '[' && ParseClass(pattern, i, &cls)) {
      e.set = cls.set;
      i = cls.end;
    } else {
      e.set.Add(static_cast<unsigned char>(c));
      ++i;
    }
    out->push_back(e);
  }
}

// A visited-set for product searches over (i, j) pairs.
class PairSet {
 public:
  PairSet(size_t rows, size_t cols)
      : cols_(cols), bits_((rows * cols + 63) / 64) {}
  // Marks (i, j); false if it was already marked.
  bool Insert(size_t i, size_t j) {
    const size_t k = i * cols_ + j;
    const uint64_t bit = uint64_t{1} << (k & 63);
    if (bits_[k >> 6] & bit) return false;
    bits_[k >> 6] |= bit;
    return true;
  }

 private:
  size_t cols_;
  absl::InlinedVector<uint64_t, 8> bits_;
};

// Whether some component matches both component patterns `a` and `b`: a
// search over pairs of positions in the two patterns, advancing both over
// a byte their sets share, or one over a byte its '*' absorbs.
bool ComponentsIntersect(std::string_view a, std::string_view b) {
  const bool ga = IsGlobComponent(a);
  const bool gb = IsGlobComponent(b);
  if (!ga && !gb) return a == b;
  if (!gb) return MatchComponent(a, b);
  if (!ga) return MatchComponent(b, a);
  std::vector<Element> pa, pb;
  ParseElements(a, &pa);
  ParseElements(b, &pb);
  const size_t n = pa.size();
  const size_t m = pb.size();
  PairSet seen(n + 1, m + 1);
  absl::InlinedVector<std::pair<size_t, size_t>, 16> todo;
  auto visit = [&](size_t i, size_t j) {
    if (seen.Insert(i, j)) todo.emplace_back(i, j);
  };
  visit(0, 0);
  while (!todo.empty()) {
    const auto [i, j] = todo.back();
    todo.pop_back();
    if (i == n && j == m) return true;
    const Element* x = i < n ? &pa[i] : nullptr;
    const Element* y = j < m ? &pb[j] : nullptr;
    if (x && x->star) {
      visit(i + 1, j);                                        // the '*' ends
      if (y && !y->star && !y->set.Empty()) visit(i, j + 1);  // it eats y's
    }
    if (y && y->star) {
      visit(i, j + 1);
      if (x && !x->star && !x->set.Empty()) visit(i + 1, j);
    }
    if (x && y && !x->star && !y->star && x->set.Intersects(y->set)) {
      visit(i + 1, j + 1);
    }
  }
  return false;
}

// Overlap of two split paths: a search over pairs (components of `a`
// used, components of `b` used) reachable by matching a common sequence of
// components. Reaching the end of either means the path it matched is an
// ancestor-or-self of a path the other side can still match (every
// well-formed component pattern matches some component).
bool OverlapComponents(const Components& a, const Components& b) {
  const size_t n = a.size();
  const size_t m = b.size();
  if (n == 0 || m == 0) return true;
  PairSet seen(n + 1, m + 1);
  absl::InlinedVector<std::pair<size_t, size_t>, 16> todo;
  auto visit = [&](size_t i, size_t j) {
    if (seen.Insert(i, j)) todo.emplace_back(i, j);
  };
  visit(0, 0);
  while (!todo.empty()) {
    const auto [i, j] = todo.back();
    todo.pop_back();
    if (i == n || j == m) return true;
    const bool sa = a[i] == "**";
    const bool sb = b[j] == "**";
    if (sa) {
      visit(i + 1, j);  // "**" stops
      visit(i, j + 1);  // "**" takes the component b[j] matches
    }
    if (sb) {
      visit(i, j + 1);
      visit(i + 1, j);
    }
    if (!sa && !sb && ComponentsIntersect(a[i], b[j])) visit(i + 1, j + 1);
  }
  return false;
}

// Whether glob `pattern` matches `path` or one of its ancestors.
bool MatchesSelfOrAncestor(std::string_view pattern, std::string_view path) {
  if (GlobMatch(pattern, "")) return true;
  for (Cursor c(path); !c.Done(); c.Next()) {
    if (GlobMatch(pattern, path.substr(0, c.End()))) return true;
  }
  return false;
}

// ---- Normalize ----------------------------------------------------------

Status Bad(std::string_view field, std::string_view path,
           std::string_view what) {
  std::string m(field);
  m += ' ';
  m += Quote(path);
  m += ' ';
  m += what;
  return InvalidRequest(std::move(m));
}

// Checks the bytes of `path` common to Normalize and NormalizeRoot.
Status CheckText(std::string_view field, std::string_view path) {
  if (path.empty()) {
    return InvalidRequest(std::string(field) + " is an empty path");
  }
  if (path.size() > kMaxPathBytes) {
    return Bad(field, path,
               "is " + std::to_string(path.size()) +
                   " bytes long; paths are limited to " +
                   std::to_string(kMaxPathBytes));
  }
  if (path.find('\0') != std::string_view::npos) {
    return Bad(field, path, "holds a NUL byte");
  }
  return Status::Ok();
}

// Checks the glob syntax of one component of normalised path `path`.
Status CheckComponent(std::string_view field, std::string_view path,
                      std::string_view component) {
  if (component == "**") return Status::Ok();
  for (size_t i = 0; i < component.size(); ++i) {
    const char c = component[i];
    if (c == '*' && i + 1 < component.size() && component[i + 1] == '*') {
      return Bad(field, path,
                 "has \"**\" inside the component " + Quote(component) +
                     "; \"**\" must be a whole component");
    }
    if (c != '[') continue;
    CharClass cls;
    if (!ParseClass(component, i, &cls)) {
      return Bad(field, path,
                 "has an unclosed '[' in the component " + Quote(component));
    }
    const std::string_view text = component.substr(i, cls.end - i);
    if (cls.reversed) {
      return Bad(field, path,
                 "has a reversed range in the character class " + Quote(text));
    }
    if (cls.set.Empty()) {
      return Bad(field, path,
                 "has the character class " + Quote(text) +
                     ", which matches no character");
    }
    i = cls.end - 1;
  }
  return Status::Ok();
}

// The components of normalised root `root` ("/" and "" have none).
Components RootComponents(std::string_view root) {
  Components out;
  size_t pos = 0;
  while (pos < root.size()) {
    const size_t slash = root.find('/', pos);
    const size_t end = slash == std::string_view::npos ? root.size() : slash;
    if (end > pos) out.push_back(root.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

std::string RootName(std::string_view root) {
  return root.empty() ? "the workspace root"
                      : "the workspace root " + std::string(root);
}

// Whether relative `path` is already in normal form and holds no glob: no
// empty, "." or ".." component, no NUL, within the length limit. Most
// requests name such paths; they need no resolving.
bool AlreadyNormal(std::string_view path) {
  if (path.empty() || path.size() > kMaxPathBytes || path.front() == '/' ||
      path.back() == '/') {
    return false;
  }
  size_t start = 0;
  for (size_t i = 0; i <= path.size(); ++i) {
    const char c = i < path.size() ? path[i] : '/';
    if (c == '/') {
      const size_t n = i - start;
      if (n == 0 || (path[start] == '.' &&
                     (n == 1 || (n == 2 && path[start + 1] == '.'))))
        return false;
      start = i + 1;
    } else if (c == '*' || c == '?' || c == '[' || c == '\0') {
      return false;
    }
  }
  return true;
}

}  // namespace

StatusOr<std::string> Normalize(std::string_view root, std::string_view path,
                                std::string_view field) {
  if (AlreadyNormal(path)) return std::string(path);
  QM_RETURN_IF_ERROR(CheckText(field, path));
  const bool absolute = path.front() == '/';
  if (absolute && root.empty()) {
    return InvalidRequest(std::string(field) + " absolute path " + Quote(path) +
                          " needs conflicts.workspace_root (or use a path "
                          "relative to the workspace)");
  }
  const Components root_parts = RootComponents(root);
  const size_t base = root_parts.size();
  // The resolved components, from "/" down. A relative path starts at the
  // root; an absolute one at "/", and is `inside` once it has reached the
  // root. Once inside, a ".." may not climb above the root, even if later
  // components come back in.
  Components stack;
  if (!absolute) stack = root_parts;
  bool inside = !absolute || base == 0;
  size_t pos = 0;
  while (pos <= path.size()) {
    const size_t slash = path.find('/', pos);
    const size_t end = slash == std::string_view::npos ? path.size() : slash;
    const std::string_view c = path.substr(pos, end - pos);
    pos = end + 1;
    if (c.empty() || c == ".") continue;
    if (c == "..") {
      if (inside && stack.size() == base) {
        return Bad(field, path, "climbs out of " + RootName(root));
      }
      if (stack.empty()) continue;  // "/.." is "/" (outside the root anyway)
      if (inside && IsGlobComponent(stack.back())) {
        return Bad(field, path,
                   "has \"..\" after the glob component " +
                       Quote(stack.back()) + ", which is ambiguous");
      }
      stack.pop_back();
      continue;
    }
    stack.push_back(c);
    if (!inside && stack.size() == base &&
        std::equal(stack.begin(), stack.end(), root_parts.begin())) {
      inside = true;
    }
  }
  if (!inside) {
    return Bad(field, path, "lies outside " + RootName(root));
  }
  std::string out;
  for (size_t i = base; i < stack.size(); ++i) {
    QM_RETURN_IF_ERROR(CheckComponent(field, path, stack[i]));
    if (i > base) out += '/';
    out += stack[i];
  }
  return out;
}

StatusOr<std::string_view> NormalizeView(std::string_view root,
                                         std::string_view path,
                                         std::string_view field,
                                         std::string* scratch) {
  if (AlreadyNormal(path)) return path;
  auto norm = Normalize(root, path, field);
  if (!norm.ok()) return norm.status();
  *scratch = std::move(*norm);
  return std::string_view(*scratch);
}

StatusOr<std::string> NormalizeRoot(std::string_view root,
                                    std::string_view field) {
  QM_RETURN_IF_ERROR(CheckText(field, root));
  if (root.front() != '/') {
    return Bad(field, root, "must be an absolute path");
  }
  Components stack;
  for (std::string_view c : RootComponents(root)) {
    if (c == ".") continue;
    if (c == "..") {
      if (!stack.empty()) stack.pop_back();
      continue;
    }
    stack.push_back(c);
  }
  if (stack.empty()) return std::string("/");
  std::string out;
  for (std::string_view c : stack) {
    out += '/';
    out += c;
  }
  return out;
}

bool IsGlob(std::string_view path) { return IsGlobComponent(path); }

bool GlobMatch(std::string_view pattern, std::string_view path) {
  if (!IsGlob(pattern)) return pattern == path;
  // Components against components, "**" standing for any run of them: as
  // MatchComponent one level up, backtracking to the last "**" only.
  size_t p = FirstComponent(pattern);
  size_t t = FirstComponent(path);
  bool starred = false;
  size_t star_p = 0;  // pattern position after the last "**"
  size_t star_t = 0;  // path position that "**" was last tried to end at
  while (!AtEnd(path, t)) {
    if (!AtEnd(pattern, p)) {
      const std::string_view pc = ComponentAt(pattern, p);
      if (pc == "**") {
        starred = true;
        star_p = p = NextComponent(pattern, p);
        star_t = t;
        continue;
      }
      if (MatchComponent(pc, ComponentAt(path, t))) {
        p = NextComponent(pattern, p);
        t = NextComponent(path, t);
        continue;
      }
    }
    if (!starred) return false;
    p = star_p;
    t = star_t = NextComponent(path, star_t);
  }
  while (!AtEnd(pattern, p) && ComponentAt(pattern, p) == "**") {
    p = NextComponent(pattern, p);
  }
  return AtEnd(pattern, p);
}

bool Overlap(std::string_view a, std::string_view b) {
  if (!IsGlob(a) && !IsGlob(b)) {
    return IsAncestorOrSelf(a, b) || IsAncestorOrSelf(b, a);
  }
  return OverlapComponents(Split(a), Split(b));
}

// ---- LockTable ------------------------------------------------------------

namespace {

// A plain lock held on a node.
struct Lock {
  uint64_t owner;
  bool exclusive;
};

// A glob lock, held on the node of its fixed prefix.
struct GlobLock {
  std::string path;
  uint64_t owner;
  bool exclusive;
};

size_t HashPath(std::string_view path) {
  // Through absl::string_view: Debian's Abseil has its own string_view type
  // and hashes std::string_view out of line with std::hash.
  return absl::Hash<absl::string_view>{}(
      absl::string_view(path.data(), path.size()));
}

// How much of normalised `path` lies before its first glob component: all
// of it for a plain path, else up to (not including) the '/' before that
// component (0 when the first component is one).
size_t PlainPrefixSize(std::string_view path) {
  for (size_t i = 0; i < path.size(); ++i) {
    const char c = path[i];
    if (c == '*' || c == '?' || c == '[') {
      const size_t slash = path.rfind('/', i);
      return slash == std::string_view::npos ? 0 : slash;
    }
  }
  return path.size();
}

}  // namespace

// One path component. Every node but the root holds a lock somewhere in its
// subtree: Remove deletes nodes as they empty. A node and its path are one
// allocation (the path's bytes follow the node), so checking the index's
// candidate reads no other block. The fields the walk over the ancestors
// reads come first.
struct LockTable::Node {
  // A node for normalised `path` (hash `hash`), whose last component starts
  // at `name_start`.
  static Node* Create(Node* parent, std::string_view path, size_t name_start,
                      size_t hash) {
    void* block = ::operator new(sizeof(Node) + path.size());
    Node* node = new (block) Node(parent, path.size(), name_start, hash);
    std::memcpy(static_cast<char*>(block) + sizeof(Node), path.data(),
                path.size());
    return node;
  }
  static void Destroy(Node* node) {
    node->~Node();
    ::operator delete(static_cast<void*>(node));
  }

  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // The node's normalised path ("" for the root); Hit::path of its locks.
  std::string_view path() const {
    return std::string_view(reinterpret_cast<const char*>(this + 1), path_size);
  }
  // The component naming this node in its parent ("" for the root).
  std::string_view name() const { return path().substr(name_pos); }

  // Makes `child` (a new node) the first of this node's children.
  void Link(Node* child) {
    child->next = first_child;
    if (first_child) first_child->prev = child;
    first_child = child;
  }
  // Takes `child` out of this node's children.
  void Unlink(Node* child) {
    if (child->prev) {
      child->prev->next = child->next;
    } else {
      first_child = child->next;
    }
    if (child->next) child->next->prev = child->prev;
  }

  // The children in order of name, for walks whose output order matters.
  absl::InlinedVector<const Node*, 8> SortedChildren() const {
    absl::InlinedVector<const Node*, 8> out;
    if (!first_child) return out;
    for (const Node* c = first_child; c; c = c->next) out.push_back(c);
    std::sort(out.begin(), out.end(), [](const Node* a, const Node* b) {
      return a->name() < b->name();
    });
    return out;
  }

  Node* parent;
  // Locks (plain and glob) on this node and below, and how many of them are
  // exclusive: searches skip subtrees where nothing can conflict.
  uint32_t count = 0;
  uint32_t exclusive = 0;
  absl::InlinedVector<Lock, 1> locks;            // plain locks on this path
  std::unique_ptr<std::vector<GlobLock>> globs;  // globs with this prefix
  // The children, in no order (most recently created first).
  Node* first_child = nullptr;
  Node* next = nullptr;  // the parent's next child
  Node* prev = nullptr;  // the parent's previous child
  size_t hash;           // HashPath(path())
  uint32_t path_size;
  uint32_t name_pos;

 private:
  Node(Node* up, size_t size, size_t name_start, size_t h)
      : parent(up),
        hash(h),
        path_size(static_cast<uint32_t>(size)),
        name_pos(static_cast<uint32_t>(name_start)) {}
  ~Node() = default;
};

// The state of one ForEachConflict call.
struct LockTable::Query {
  Query(std::string_view p, bool x, uint64_t s,
        absl::FunctionRef<bool(const Hit&)> f, bool g)
      : path(p), exclusive(x), self(s), fn(f), glob(g) {
    if (glob) parts = Split(path);
  }

  std::string_view path;
  bool exclusive;
  uint64_t self;
  absl::FunctionRef<bool(const Hit&)> fn;
  bool glob;
  Components parts;  // of `path`, for glob queries
  // The components of the node a glob query's walk is at.
  Components trail;

  bool Wanted(uint64_t owner, bool other_exclusive) const {
    return (exclusive || other_exclusive) && (self == 0 || owner != self);
  }
  // Reports the plain locks on `n` (the caller knows they overlap `path`).
  bool ReportLocks(const Node& n) const {
    for (const Lock& l : n.locks) {
      if (Wanted(l.owner, l.exclusive) &&
          !fn(Hit{l.owner, n.path(), l.exclusive})) {
        return false;
      }
    }
    return true;
  }
  // Reports the globs on `n` that overlap `path` (all of them when `all`).
  bool ReportGlobs(const Node& n, bool all) const {
    if (!n.globs) return true;
    for (const GlobLock& g : *n.globs) {
      if (Wanted(g.owner, g.exclusive) && (all || Overlap(g.path, path)) &&
          !fn(Hit{g.owner, g.path, g.exclusive})) {
        return false;
      }
    }
    return true;
  }
  // Reports the conflicting locks in the subtree of `n`, a strict
  // descendant of the query's (prefix) node. False when `fn` stopped.
  bool Subtree(const Node& n) {
    if (!exclusive && n.exclusive == 0) return true;
    if (glob) {
      // Nothing below a node that `path` does not overlap overlaps it.
      trail.push_back(n.name());
      const bool more = SubtreeBody(n, OverlapComponents(parts, trail));
      trail.pop_back();
      return more;
    }
    // Everything below a plain path overlaps it.
    return SubtreeBody(n, true);
  }
  bool SubtreeBody(const Node& n, bool overlaps) {
    if (!overlaps) return true;
    if (!ReportLocks(n) || !ReportGlobs(n, !glob)) return false;
    for (const Node* child : n.SortedChildren()) {
      if (!Subtree(*child)) return false;
    }
    return true;
  }
};

// The root node and an index of every other node by its full path.
struct LockTable::Index {
  // A normalised path and its hash, for probing the index.
  struct Key {
    std::string_view path;
    size_t hash;
  };
  // An entry of the index: a node and its hash, kept beside the pointer so
  // that a probe which misses reads no node.
  struct Entry {
    size_t hash;
    Node* node;
  };
  // Entries hash by the node's path, compare as nodes, and are found by
  // Key.
  struct EntryHash {
    using is_transparent = void;
    size_t operator()(const Entry& e) const { return e.hash; }
    size_t operator()(const Key& key) const { return key.hash; }
  };
  struct EntryEq {
    using is_transparent = void;
    bool operator()(const Entry& a, const Entry& b) const {
      return a.node == b.node;
    }
    bool operator()(const Entry& e, const Key& key) const {
      return e.hash == key.hash && e.node->path() == key.path;
    }
    bool operator()(const Key& key, const Entry& e) const {
      return (*this)(e, key);
    }
  };

  Index() : root(Node::Create(nullptr, "", 0, HashPath(""))) {}
  ~Index() {
    for (const Entry& e : nodes) Node::Destroy(e.node);
    Node::Destroy(root);
  }

  // The node of normalised plain path `path` (hash `hash`), or null ("" is
  // the root).
  Node* Find(std::string_view path, size_t hash) const {
    if (path.empty()) return root;
    auto it = nodes.find(Key{path, hash});
    return it == nodes.end() ? nullptr : it->node;
  }

  // The deepest node on the way to plain path `path` (hash `hash`, its
  // parent's `parent_hash`): its own node (and `*exact` true) or that of its
  // longest prefix that has one (the root at least).
  Node* Deepest(std::string_view path, size_t hash, size_t parent_hash,
                bool* exact) const {
    if (Node* node = Find(path, hash)) {
      *exact = true;
      return node;
    }
    *exact = false;
    // Every prefix of a node's path has a node, so the prefixes that have
    // one are the shortest ones: try the parent (the common case), then
    // search by halves (a few probes even for paths thousands of components
    // deep, not one per component).
    const size_t last = path.rfind('/');
    if (last == std::string_view::npos) return root;
    const std::string_view parent = path.substr(0, last);
    if (Node* node = Find(parent, parent_hash)) return node;
    absl::InlinedVector<size_t, 16> slashes;  // where the shorter prefixes end
    for (size_t i = path.find('/'); i < last; i = path.find('/', i + 1)) {
      slashes.push_back(i);
    }
    Node* deepest = root;
    size_t lo = 0;               // prefixes [0, lo) have nodes
    size_t hi = slashes.size();  // prefixes [hi, ...) have none
    while (lo < hi) {
      const size_t mid = lo + (hi - lo) / 2;
      const std::string_view p = path.substr(0, slashes[mid]);
      if (Node* node = Find(p, HashPath(p))) {
        deepest = node;
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return deepest;
  }

  // Creates the nodes from `from` (the deepest node on the way to plain
  // path `path`) down to `path`'s (hash `hash`), and returns that one.
  Node* Grow(Node* from, std::string_view path, size_t hash) {
    Node* node = from;
    size_t pos = from == root ? 0 : from->path_size + 1;
    while (true) {
      const size_t slash = path.find('/', pos);
      const size_t end = slash == std::string_view::npos ? path.size() : slash;
      const std::string_view sub = path.substr(0, end);
      Node* child = Node::Create(node, sub, pos,
                                 end == path.size() ? hash : HashPath(sub));
      nodes.insert(Entry{child->hash, child});
      node->Link(child);
      node = child;
      if (end == path.size()) return node;
      pos = end + 1;
    }
  }

  // Unlinks and frees `node` (not the root), which has no locks left in its
  // subtree (so no children).
  void Delete(Node* node) {
    node->parent->Unlink(node);
    nodes.erase(Entry{node->hash, node});
    Node::Destroy(node);
  }

  Node* const root;  // path ""; not in `nodes`
  absl::flat_hash_set<Entry, EntryHash, EntryEq> nodes;
};

LockTable::LockTable() : index_(std::make_unique<Index>()) {}
LockTable::~LockTable() = default;

LockTable::Key::Key(std::string_view p)
    : path(p), prefix_size(static_cast<uint32_t>(PlainPrefixSize(p))) {
  const std::string_view prefix = this->prefix();
  hash = HashPath(prefix);
  if (const size_t last = prefix.rfind('/'); last != std::string_view::npos) {
    parent_hash = HashPath(prefix.substr(0, last));
  }
}

LockTable::Handle LockTable::Add(const Key& key, bool exclusive, uint64_t owner,
                                 const Probe* probe) {
  const std::string_view path = key.path;
  const size_t fixed = key.prefix_size;
  const std::string_view prefix = key.prefix();
  const size_t hash = key.hash;
  bool exact;
  Node* node;
  // A node created since the probe below where it ended may be on the way
  // to `path`: new children are linked first, so the first child tells.
  if (probe && probe->table == this && probe->deletions == deletions_ &&
      probe->node && probe->hash == hash &&
      (probe->exact || probe->node->first_child == probe->first_child)) {
    node = probe->node;
    exact = probe->exact;
  } else {
    node = index_->Deepest(prefix, hash, key.parent_hash, &exact);
  }
  if (!exact) node = index_->Grow(node, prefix, hash);
  for (Node* n = node; n; n = n->parent) {
    ++n->count;
    n->exclusive += exclusive;
  }
  if (fixed != path.size()) {
    if (!node->globs) node->globs = std::make_unique<std::vector<GlobLock>>();
    node->globs->push_back(GlobLock{std::string(path), owner, exclusive});
  } else {
    node->locks.push_back(Lock{owner, exclusive});
  }
  ++size_;
  return node;
}

bool LockTable::Remove(std::string_view path, bool exclusive, uint64_t owner) {
  const std::string_view prefix = path.substr(0, PlainPrefixSize(path));
  Node* node = index_->Find(prefix, HashPath(prefix));
  if (!node) return false;
  return Remove(node, path, exclusive, owner);
}

bool LockTable::Remove(Handle node, std::string_view path, bool exclusive,
                       uint64_t owner) {
  if (node->path().size() != path.size()) {
    // A glob: stored on the node of its fixed prefix.
    if (!node->globs) return false;
    auto& globs = *node->globs;
    auto it = std::find_if(globs.begin(), globs.end(), [&](const GlobLock& g) {
      return g.owner == owner && g.exclusive == exclusive && g.path == path;
    });
    if (it == globs.end()) return false;
    globs.erase(it);
    if (globs.empty()) node->globs.reset();
  } else {
    auto it = std::find_if(
        node->locks.begin(), node->locks.end(), [&](const Lock& l) {
          return l.owner == owner && l.exclusive == exclusive;
        });
    if (it == node->locks.end()) return false;
    node->locks.erase(it);
  }
  --size_;
  for (Node* n = node; n; n = n->parent) {
    --n->count;
    n->exclusive -= exclusive;
  }
  // Delete the nodes left without locks below them, bottom up.
  while (node != index_->root && node->count == 0) {
    Node* parent = node->parent;
    index_->Delete(node);
    ++deletions_;
    node = parent;
  }
  return true;
}

void LockTable::ForEachConflict(const Key& key, bool exclusive, uint64_t self,
                                absl::FunctionRef<bool(const Hit&)> fn,
                                Probe* probe) const {
  const std::string_view path = key.path;
  // Everything that can conflict lies in the root's subtree.
  const Node* root = index_->root;
  if (root->count == 0 || (!exclusive && root->exclusive == 0)) return;
  const size_t fixed = key.prefix_size;
  const std::string_view prefix = key.prefix();
  bool exact;
  Node* const found =
      index_->Deepest(prefix, key.hash, key.parent_hash, &exact);
  if (probe) {
    *probe =
        Probe{this, found, found->first_child, deletions_, key.hash, exact};
  }
  const Node* node = found;
  // The ancestors-or-self of `path` (of its fixed prefix for a glob) that
  // have nodes, from the root down: their plain locks cover it; their globs
  // may overlap it.
  absl::InlinedVector<const Node*, 16> chain;
  for (const Node* n = node; n; n = n->parent) chain.push_back(n);
  Query q(path, exclusive, self, fn, fixed != path.size());
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    const Node& n = **it;
    // Everything that can conflict from here on lies in `n`'s subtree.
    if (!exclusive && n.exclusive == 0) return;
    if (n.count == 0) return;
    if (!q.ReportLocks(n) || !q.ReportGlobs(n, false)) return;
  }
  if (!exact) return;
  // Below the node of `path` (or of its prefix).
  if (q.glob) q.trail = Split(prefix);
  for (const Node* child : node->SortedChildren()) {
    if (!q.Subtree(*child)) return;
  }
}

void LockTable::Prefetch(const Key& key) const {
  const std::string_view prefix = key.prefix();
  if (prefix.empty()) return;
  index_->nodes.prefetch(Index::Key{prefix, key.hash});
  const size_t last = prefix.rfind('/');
  if (last == std::string_view::npos) return;
  index_->nodes.prefetch(Index::Key{prefix.substr(0, last), key.parent_hash});
}

void LockTable::ForEachCovering(std::string_view path,
                                absl::FunctionRef<bool(const Hit&)> fn) const {
  bool exact;
  const Key key(path);
  const Node* node = index_->Deepest(path, key.hash, key.parent_hash, &exact);
  absl::InlinedVector<const Node*, 16> chain;
  for (const Node* n = node; n; n = n->parent) chain.push_back(n);
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    const Node& n = **it;
    for (const Lock& l : n.locks) {
      if (!fn(Hit{l.owner, n.path(), l.exclusive})) return;
    }
    if (n.globs) {
      for (const GlobLock& g : *n.globs) {
        if (MatchesSelfOrAncestor(g.path, path) &&
            !fn(Hit{g.owner, g.path, g.exclusive})) {
          return;
        }
      }
    }
  }
}

void LockTable::ForEachLock(absl::FunctionRef<void(const Hit&)> fn) const {
  // Iterative (a path may be thousands of components deep): the stack holds
  // the nodes still to visit, the next one on top.
  std::vector<const Node*> stack = {index_->root};
  while (!stack.empty()) {
    const Node* node = stack.back();
    stack.pop_back();
    for (const Lock& l : node->locks) {
      fn(Hit{l.owner, node->path(), l.exclusive});
    }
    if (node->globs) {
      for (const GlobLock& g : *node->globs) {
        fn(Hit{g.owner, g.path, g.exclusive});
      }
    }
    const auto children = node->SortedChildren();
    for (auto it = children.rbegin(); it != children.rend(); ++it) {
      stack.push_back(*it);
    }
  }
}

}  // namespace qm::paths
