// Path locks: normalisation, glob matching, overlap and the lock table,
// with randomized comparisons against brute-force references.
#include "core/paths.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bitset>
#include <random>
#include <string>
#include <tuple>
#include <vector>

namespace qm::paths {
namespace {

constexpr std::string_view kRoot = "/work/repo";

// Also checks that NormalizeView agrees and that the result is no longer
// than the text (the engine sizes one buffer for a request's paths so).
std::string Norm(std::string_view path, std::string_view root = kRoot) {
  StatusOr<std::string> r = Normalize(root, path, "f");
  EXPECT_TRUE(r.ok()) << path << ": " << r.status().ToString();
  std::string scratch;
  StatusOr<std::string_view> v = NormalizeView(root, path, "f", &scratch);
  EXPECT_EQ(v.ok(), r.ok()) << path;
  if (r.ok() && v.ok()) {
    EXPECT_EQ(*v, *r) << path;
    EXPECT_LE(r->size(), path.size()) << path;
  }
  return r.ok() ? *r : "<error>";
}

// The error message for `path`, "" when it is accepted.
std::string NormError(std::string_view path, std::string_view root = kRoot,
                      std::string_view field = "f") {
  StatusOr<std::string> r = Normalize(root, path, field);
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), Code::kInvalidRequest);
  return r.status().message();
}

bool Contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

// ---- Normalize --------------------------------------------------------

TEST(NormalizeTest, RelativePathsResolveLexically) {
  EXPECT_EQ(Norm("src/a.ts"), "src/a.ts");
  EXPECT_EQ(Norm("./src//a.ts/"), "src/a.ts");
  EXPECT_EQ(Norm("src/./lib/../a.ts"), "src/a.ts");
  EXPECT_EQ(Norm("src///"), "src");
  EXPECT_EQ(Norm("a/b/c/../../d"), "a/d");
}

TEST(NormalizeTest, TheRootItselfIsEmpty) {
  EXPECT_EQ(Norm("."), "");
  EXPECT_EQ(Norm("./"), "");
  EXPECT_EQ(Norm("a/.."), "");
  EXPECT_EQ(Norm("/work/repo"), "");
  EXPECT_EQ(Norm("/work/repo/"), "");
  EXPECT_EQ(Norm("/work/repo/."), "");
}

TEST(NormalizeTest, AbsolutePathsInsideTheRoot) {
  EXPECT_EQ(Norm("/work/repo/src/x.cc"), "src/x.cc");
  EXPECT_EQ(Norm("//work//repo/./src/"), "src");
  // ".." before reaching the root is ordinary lexical resolution.
  EXPECT_EQ(Norm("/work/other/../repo/src"), "src");
  EXPECT_EQ(Norm("/../work/repo/src"), "src");
  EXPECT_EQ(Norm("/work/repo/src/../lib"), "lib");
}

TEST(NormalizeTest, AbsolutePathsOutsideTheRootAreRefused) {
  // Containment is by whole components.
  EXPECT_EQ(NormError("/work/repository/x", kRoot, "shared_access[0]"),
            "shared_access[0] \"/work/repository/x\" lies outside the "
            "workspace root /work/repo");
  EXPECT_TRUE(Contains(NormError("/work"), "lies outside"));
  EXPECT_TRUE(Contains(NormError("/etc/passwd"), "lies outside"));
  EXPECT_TRUE(Contains(NormError("/work/rep"), "lies outside"));
  EXPECT_TRUE(Contains(NormError("/"), "lies outside"));
}

TEST(NormalizeTest, ClimbingOutOfTheRootIsRefused) {
  EXPECT_EQ(NormError("../x", kRoot, "exclusive_access[2]"),
            "exclusive_access[2] \"../x\" climbs out of the workspace root "
            "/work/repo");
  // Even when later components come back in.
  EXPECT_TRUE(Contains(NormError("a/../../repo/x"), "climbs out"));
  EXPECT_TRUE(Contains(NormError(".."), "climbs out"));
  EXPECT_TRUE(Contains(NormError("/work/repo/.."), "climbs out"));
  EXPECT_TRUE(Contains(NormError("/work/repo/../repo/x"), "climbs out"));
  EXPECT_TRUE(Contains(NormError("a/b/../../../c"), "climbs out"));
}

TEST(NormalizeTest, WithoutARootOnlyRelativePaths) {
  EXPECT_EQ(Norm("src/a", ""), "src/a");
  EXPECT_EQ(Norm(".", ""), "");
  EXPECT_EQ(NormError("/abs/path", "", "exclusive_access[0]"),
            "exclusive_access[0] absolute path \"/abs/path\" needs "
            "conflicts.workspace_root (or use a path relative to the "
            "workspace)");
  EXPECT_EQ(NormError("a/../..", "", "g"),
            "g \"a/../..\" climbs out of the workspace root");
}

TEST(NormalizeTest, TheFileSystemRootContainsEveryAbsolutePath) {
  EXPECT_EQ(Norm("/etc/x", "/"), "etc/x");
  EXPECT_EQ(Norm("/", "/"), "");
  EXPECT_EQ(Norm("etc/x", "/"), "etc/x");
  EXPECT_TRUE(Contains(NormError("/..", "/"), "climbs out"));
  EXPECT_TRUE(Contains(NormError("..", "/"), "climbs out"));
}

TEST(NormalizeTest, Limits) {
  EXPECT_EQ(NormError("", kRoot, "exclusive_access[1]"),
            "exclusive_access[1] is an empty path");
  EXPECT_EQ(NormError(std::string("a\0b", 3), kRoot, "x[0]"),
            "x[0] \"a\\x00b\" holds a NUL byte");
  std::string longest(4096, 'a');
  for (size_t i = 100; i < longest.size(); i += 100) longest[i] = '/';
  EXPECT_EQ(Norm(longest).size(), 4096u);
  const std::string error = NormError(longest + "a", kRoot, "x[9]");
  EXPECT_TRUE(Contains(error, "x[9] \"aaaa")) << error;
  EXPECT_TRUE(Contains(error, "...\" is 4097 bytes long")) << error;
  // The quoted path is cut short.
  EXPECT_LT(error.size(), 200u);
}

TEST(NormalizeTest, WellFormedGlobs) {
  EXPECT_EQ(Norm("src/**/*.ts"), "src/**/*.ts");
  EXPECT_EQ(Norm("/work/repo/src/*.ts"), "src/*.ts");
  EXPECT_EQ(Norm("**"), "**");
  EXPECT_EQ(Norm("a?c/[ab]/[!x-z]/[^q]"), "a?c/[ab]/[!x-z]/[^q]");
  EXPECT_EQ(Norm("[]]"), "[]]");    // ']' first is a member
  EXPECT_EQ(Norm("[!]]"), "[!]]");  // likewise after the negation
  EXPECT_EQ(Norm("[**]"), "[**]");  // stars inside a class are members
  EXPECT_EQ(Norm("src/*/./x"), "src/*/x");
  EXPECT_EQ(Norm("src/x/../*"), "src/*");
}

TEST(NormalizeTest, MalformedGlobsAreRefused) {
  EXPECT_EQ(NormError("src/a**", kRoot, "exclusive_access[0]"),
            "exclusive_access[0] \"src/a**\" has \"**\" inside the component "
            "\"a**\"; \"**\" must be a whole component");
  EXPECT_TRUE(Contains(NormError("**b"), "\"**\" inside"));
  EXPECT_TRUE(Contains(NormError("a**b"), "\"**\" inside"));
  EXPECT_TRUE(Contains(NormError("***"), "\"**\" inside"));
  EXPECT_EQ(NormError("src/[ab", kRoot, "s[1]"),
            "s[1] \"src/[ab\" has an unclosed '[' in the component \"[ab\"");
  EXPECT_TRUE(Contains(NormError("[]"), "unclosed '['"));
  EXPECT_TRUE(Contains(NormError("[!]"), "unclosed '['"));
  EXPECT_TRUE(Contains(NormError("a[b/c]"), "unclosed '['"));
  EXPECT_TRUE(Contains(NormError("[z-a]"), "reversed range"));
  EXPECT_TRUE(
      Contains(NormError(std::string("[!\x01-\xff]")), "matches no character"));
  EXPECT_TRUE(Contains(NormError("src/*/../x"), "\"..\" after the glob"));
  EXPECT_TRUE(Contains(NormError("src/**/.."), "\"..\" after the glob"));
}

TEST(NormalizeRootTest, ResolvesLexically) {
  EXPECT_EQ(*NormalizeRoot("/work/repo/", "r"), "/work/repo");
  EXPECT_EQ(*NormalizeRoot("/work//repo", "r"), "/work/repo");
  EXPECT_EQ(*NormalizeRoot("/", "r"), "/");
  EXPECT_EQ(*NormalizeRoot("//", "r"), "/");
  EXPECT_EQ(*NormalizeRoot("/a/./b/../c", "r"), "/a/c");
  EXPECT_EQ(*NormalizeRoot("/..", "r"), "/");
  EXPECT_EQ(*NormalizeRoot("/a/../../b", "r"), "/b");
}

TEST(NormalizeRootTest, MustBeAbsolute) {
  StatusOr<std::string> r =
      NormalizeRoot("work/repo", "conflicts.workspace_root");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidRequest);
  EXPECT_EQ(r.status().message(),
            "conflicts.workspace_root \"work/repo\" must be an absolute path");
  EXPECT_FALSE(NormalizeRoot("", "r").ok());
  EXPECT_FALSE(NormalizeRoot(std::string("/a\0", 3), "r").ok());
  EXPECT_FALSE(NormalizeRoot("/" + std::string(4096, 'a'), "r").ok());
}

// ---- IsGlob, GlobMatch --------------------------------------------------

TEST(IsGlobTest, AnyGlobCharacter) {
  EXPECT_FALSE(IsGlob(""));
  EXPECT_FALSE(IsGlob("src/a.ts"));
  EXPECT_TRUE(IsGlob("src/*.ts"));
  EXPECT_TRUE(IsGlob("a?"));
  EXPECT_TRUE(IsGlob("[ab]/x"));
  EXPECT_TRUE(IsGlob("**"));
}

TEST(GlobMatchTest, PlainPatternsMatchOnlyEqualPaths) {
  EXPECT_TRUE(GlobMatch("src/a.ts", "src/a.ts"));
  EXPECT_FALSE(GlobMatch("src", "src/a.ts"));
  EXPECT_FALSE(GlobMatch("src/a.ts", "src"));
  EXPECT_TRUE(GlobMatch("", ""));
  EXPECT_FALSE(GlobMatch("", "a"));
}

TEST(GlobMatchTest, WildcardsStayInsideAComponent) {
  EXPECT_TRUE(GlobMatch("*.ts", "a.ts"));
  EXPECT_TRUE(GlobMatch("*.ts", ".ts"));
  EXPECT_FALSE(GlobMatch("*.ts", "dir/a.ts"));
  EXPECT_TRUE(GlobMatch("src/*", "src/x"));
  EXPECT_FALSE(GlobMatch("src/*", "src"));
  EXPECT_FALSE(GlobMatch("src/*", "src/x/y"));
  EXPECT_TRUE(GlobMatch("a*b*c", "aXbYbZc"));
  EXPECT_FALSE(GlobMatch("a*b*c", "aXbYbZ"));
  EXPECT_TRUE(GlobMatch("?", "x"));
  EXPECT_FALSE(GlobMatch("?", "xy"));
  EXPECT_TRUE(GlobMatch("f?o", "foo"));
  EXPECT_FALSE(GlobMatch("f?o", "fo"));
}

TEST(GlobMatchTest, CharacterClasses) {
  EXPECT_TRUE(GlobMatch("[abc].ts", "b.ts"));
  EXPECT_FALSE(GlobMatch("[abc].ts", "d.ts"));
  EXPECT_TRUE(GlobMatch("x[0-9]", "x7"));
  EXPECT_FALSE(GlobMatch("x[0-9]", "xa"));
  EXPECT_TRUE(GlobMatch("[!a]", "b"));
  EXPECT_FALSE(GlobMatch("[!a]", "a"));
  EXPECT_TRUE(GlobMatch("[^a]", "b"));
  EXPECT_FALSE(GlobMatch("[^a]", "a"));
  EXPECT_TRUE(GlobMatch("[]]", "]"));
  EXPECT_TRUE(GlobMatch("[a-]", "-"));
  EXPECT_TRUE(GlobMatch("[**]", "*"));
  EXPECT_FALSE(GlobMatch("[**]", "a"));
  // An unclosed '[' (refused by Normalize) is an ordinary character.
  EXPECT_TRUE(GlobMatch("a[b", "a[b"));
}

TEST(GlobMatchTest, DoubleStarMatchesZeroOrMoreComponents) {
  EXPECT_TRUE(GlobMatch("**", ""));
  EXPECT_TRUE(GlobMatch("**", "a/b/c"));
  EXPECT_TRUE(GlobMatch("src/**", "src"));
  EXPECT_TRUE(GlobMatch("src/**", "src/a/b"));
  EXPECT_FALSE(GlobMatch("src/**", "lib/a"));
  EXPECT_TRUE(GlobMatch("**/a.ts", "a.ts"));
  EXPECT_TRUE(GlobMatch("**/a.ts", "x/y/a.ts"));
  EXPECT_FALSE(GlobMatch("**/a.ts", "x/y/a.ts/z"));
  EXPECT_TRUE(GlobMatch("src/**/b/**/c", "src/b/c"));
  EXPECT_TRUE(GlobMatch("src/**/b/**/c", "src/x/b/y/b/z/c"));
  EXPECT_FALSE(GlobMatch("src/**/b/**/c", "src/x/b/y/c/z"));
  EXPECT_TRUE(GlobMatch("**/**", "a"));
  EXPECT_TRUE(GlobMatch("a/**/**/b", "a/b"));
}

// ---- Overlap ------------------------------------------------------------

TEST(OverlapTest, PlainPaths) {
  EXPECT_TRUE(Overlap("src/a.ts", "src/a.ts"));
  EXPECT_TRUE(Overlap("src", "src/a.ts"));  // directory and its file
  EXPECT_TRUE(Overlap("src/a.ts", "src"));
  EXPECT_FALSE(Overlap("src/a", "src/ab"));  // by whole components
  EXPECT_FALSE(Overlap("src/ab", "src/a"));
  EXPECT_FALSE(Overlap("src/a.ts", "src/b.ts"));
  EXPECT_FALSE(Overlap("src", "lib"));
  // "" is the root: an ancestor of everything.
  EXPECT_TRUE(Overlap("", "src/a.ts"));
  EXPECT_TRUE(Overlap("src/a.ts", ""));
  EXPECT_TRUE(Overlap("", ""));
}

TEST(OverlapTest, GlobAndPath) {
  EXPECT_TRUE(Overlap("src/*.ts", "src/a.ts"));
  EXPECT_TRUE(Overlap("src/a.ts", "src/*.ts"));
  EXPECT_TRUE(Overlap("src/*.ts", "src"));  // an ancestor of its matches
  EXPECT_TRUE(Overlap("src", "src/*.ts"));
  EXPECT_TRUE(Overlap("src/*.ts", "src/a.ts/x"));  // below a match
  EXPECT_FALSE(Overlap("src/*.ts", "src/a.cc"));
  EXPECT_FALSE(Overlap("src/*.ts", "lib"));
  EXPECT_FALSE(Overlap("*.md", "docs/x.md"));
  EXPECT_TRUE(Overlap("*.md", "x.md/y"));
  EXPECT_TRUE(Overlap("src/*", "src/a/b.cc"));
  EXPECT_TRUE(Overlap("*", "anything/at/all"));
  EXPECT_TRUE(Overlap("**", ""));
  EXPECT_TRUE(Overlap("", "**/x"));
  EXPECT_TRUE(Overlap("**/test/*.cc", "a/b/test"));
  EXPECT_FALSE(Overlap("src/**/test/*.cc", "lib/test/x.cc"));
  // Lexically "a/b/test/x.h" may be a directory, and the glob matches
  // "a/b/test/x.h/test/y.cc" below it: a glob opening with "**" overlaps
  // every path.
  EXPECT_TRUE(Overlap("**/test/*.cc", "a/b/test/x.h"));
  EXPECT_TRUE(Overlap("**/*.md", "src/main.cc"));
}

TEST(OverlapTest, GlobAndGlob) {
  EXPECT_TRUE(Overlap("src/*.ts", "src/**/a.ts"));
  EXPECT_FALSE(Overlap("src/*.ts", "src/*.cc"));
  EXPECT_FALSE(Overlap("src/[ab]*.ts", "src/c*.ts"));
  EXPECT_TRUE(Overlap("src/[ab]*.ts", "src/?.ts"));
  EXPECT_FALSE(Overlap("src/**", "lib/x"));
  EXPECT_FALSE(Overlap("src/**", "lib/**"));
  EXPECT_TRUE(Overlap("a*", "*b"));  // "ab"
  EXPECT_TRUE(Overlap("a?c", "*b*"));
  EXPECT_FALSE(Overlap("x[0-4]", "x[5-9]"));
  EXPECT_FALSE(Overlap("[ab]*", "[!ab]*"));
  EXPECT_TRUE(Overlap("[ab]*", "[!a]*"));
  EXPECT_FALSE(Overlap("??", "???"));
  EXPECT_TRUE(Overlap("??*", "???"));
  EXPECT_TRUE(Overlap("**/a", "b/**"));
  EXPECT_TRUE(Overlap("a/**/z", "a/b/**"));
  // "a.cc/b.ts" is matched by the first and "a.cc" by the second.
  EXPECT_TRUE(Overlap("**/*.ts", "**/*.cc"));
  EXPECT_FALSE(Overlap("*/*.ts", "*/*.cc"));
  EXPECT_TRUE(Overlap("*/*.ts", "*"));
  EXPECT_TRUE(Overlap("**", "x/**"));
}

// A reference glob matcher for the randomized tests: plain recursion.
bool RefClassHas(std::string_view cls, char c) {
  // cls is the inside of "[...]", without the brackets.
  bool negate = false;
  if (!cls.empty() && (cls[0] == '!' || cls[0] == '^')) {
    negate = true;
    cls.remove_prefix(1);
  }
  bool in = false;
  for (size_t i = 0; i < cls.size(); ++i) {
    if (i + 2 < cls.size() && cls[i + 1] == '-') {
      in |= cls[i] <= c && c <= cls[i + 2];
      i += 2;
    } else {
      in |= cls[i] == c;
    }
  }
  return in != negate;
}

bool RefMatchComponent(std::string_view p, std::string_view s) {
  if (p.empty()) return s.empty();
  if (p[0] == '*') {
    for (size_t k = 0; k <= s.size(); ++k) {
      if (RefMatchComponent(p.substr(1), s.substr(k))) return true;
    }
    return false;
  }
  if (s.empty()) return false;
  if (p[0] == '?') return RefMatchComponent(p.substr(1), s.substr(1));
  if (p[0] == '[') {
    const size_t close = p.find(']', 2);
    return RefClassHas(p.substr(1, close - 1), s[0]) &&
           RefMatchComponent(p.substr(close + 1), s.substr(1));
  }
  return p[0] == s[0] && RefMatchComponent(p.substr(1), s.substr(1));
}

std::vector<std::string> RefSplit(std::string_view path) {
  std::vector<std::string> out;
  if (path.empty()) return out;
  size_t pos = 0;
  for (;;) {
    const size_t slash = path.find('/', pos);
    out.emplace_back(path.substr(pos, slash - pos));
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  return out;
}

bool RefMatch(const std::vector<std::string>& p, size_t i,
              const std::vector<std::string>& s, size_t j) {
  if (i == p.size()) return j == s.size();
  if (p[i] == "**") {
    for (size_t k = j; k <= s.size(); ++k) {
      if (RefMatch(p, i + 1, s, k)) return true;
    }
    return false;
  }
  return j < s.size() && RefMatchComponent(p[i], s[j]) &&
         RefMatch(p, i + 1, s, j + 1);
}

std::string Join(const std::vector<std::string>& parts) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += '/';
    out += parts[i];
  }
  return out;
}

// All paths of up to `depth` components drawn from `names`.
std::vector<std::string> AllPaths(const std::vector<std::string>& names,
                                  int depth) {
  std::vector<std::string> out = {""};
  std::vector<std::vector<std::string>> level = {{}};
  for (int d = 0; d < depth; ++d) {
    std::vector<std::vector<std::string>> next;
    for (const auto& parts : level) {
      for (const std::string& n : names) {
        next.push_back(parts);
        next.back().push_back(n);
        out.push_back(Join(next.back()));
      }
    }
    level = std::move(next);
  }
  return out;
}

const std::vector<std::string> kPatternParts = {
    "a", "b", "ab", "*", "a*", "*b", "?", "[ab]", "[!a]", "**", "*a*", "??"};
const std::vector<std::string> kNames = {"a", "b", "c", "ab", "ba", "cb"};

// Every pattern of up to two components from kPatternParts.
std::vector<std::string> AllPatterns() {
  std::vector<std::string> out = AllPaths(kPatternParts, 2);
  return out;
}

TEST(GlobMatchTest, AgreesWithAReferenceMatcher) {
  const std::vector<std::string> paths = AllPaths(kNames, 3);
  for (const std::string& pattern : AllPaths(kPatternParts, 2)) {
    const std::vector<std::string> p = RefSplit(pattern);
    for (const std::string& path : paths) {
      ASSERT_EQ(GlobMatch(pattern, path), RefMatch(p, 0, RefSplit(path), 0))
          << pattern << " vs " << path;
    }
  }
}

TEST(OverlapTest, AgreesWithEnumerationOverASmallUniverse) {
  // Patterns of up to two components have witnesses of up to four
  // components among kNames, so enumerating those is exact.
  const std::vector<std::string> universe = AllPaths(kNames, 4);
  const size_t n = universe.size();
  std::vector<std::vector<size_t>> ancestors(n);  // ancestors-or-self
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      const std::string& a = universe[j];
      const std::string& d = universe[i];
      if (a.empty() || a == d ||
          (d.size() > a.size() && d.compare(0, a.size(), a) == 0 &&
           d[a.size()] == '/')) {
        ancestors[i].push_back(j);
      }
    }
  }
  using Bits = std::bitset<1600>;
  ASSERT_LE(n, Bits().size());
  const std::vector<std::string> patterns = AllPatterns();
  std::vector<Bits> matched(patterns.size()), above(patterns.size());
  for (size_t p = 0; p < patterns.size(); ++p) {
    for (size_t i = 0; i < n; ++i) {
      if (!GlobMatch(patterns[p], universe[i])) continue;
      matched[p].set(i);
      for (size_t j : ancestors[i]) above[p].set(j);
    }
  }
  for (size_t a = 0; a < patterns.size(); ++a) {
    for (size_t b = 0; b < patterns.size(); ++b) {
      const bool expected =
          (matched[a] & above[b]).any() || (matched[b] & above[a]).any();
      ASSERT_EQ(Overlap(patterns[a], patterns[b]), expected)
          << patterns[a] << " vs " << patterns[b];
    }
  }
}

// ---- LockTable ----------------------------------------------------------

using HitTuple = std::tuple<uint64_t, std::string, bool>;

std::vector<HitTuple> Conflicts(const LockTable& t, std::string_view path,
                                bool exclusive, uint64_t self = 0) {
  std::vector<HitTuple> out;
  t.ForEachConflict(path, exclusive, self, [&](const LockTable::Hit& h) {
    out.emplace_back(h.owner, std::string(h.path), h.exclusive);
    return true;
  });
  return out;
}

std::vector<HitTuple> Covering(const LockTable& t, std::string_view path) {
  std::vector<HitTuple> out;
  t.ForEachCovering(path, [&](const LockTable::Hit& h) {
    out.emplace_back(h.owner, std::string(h.path), h.exclusive);
    return true;
  });
  return out;
}

TEST(LockTableTest, EmptyTable) {
  LockTable t;
  EXPECT_EQ(t.size(), 0u);
  EXPECT_TRUE(Conflicts(t, "", true).empty());
  EXPECT_TRUE(Conflicts(t, "a/b", true).empty());
  EXPECT_TRUE(Conflicts(t, "**", true).empty());
  EXPECT_TRUE(Covering(t, "a").empty());
  EXPECT_FALSE(t.Remove("a", true, 1));
}

TEST(LockTableTest, ExclusiveConflictsWithEverySharedDoesNot) {
  LockTable t;
  t.Add("src/a.ts", false, 1);
  t.Add("src/a.ts", false, 2);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_TRUE(Conflicts(t, "src/a.ts", false).empty());
  EXPECT_EQ(
      Conflicts(t, "src/a.ts", true),
      (std::vector<HitTuple>{{1, "src/a.ts", false}, {2, "src/a.ts", false}}));
  t.Add("src/a.ts", true, 3);
  EXPECT_EQ(Conflicts(t, "src/a.ts", false),
            (std::vector<HitTuple>{{3, "src/a.ts", true}}));
  EXPECT_TRUE(Conflicts(t, "src/b.ts", true).empty());
  EXPECT_TRUE(Conflicts(t, "lib", true).empty());
}

TEST(LockTableTest, DirectoryAndFileBothWays) {
  LockTable t;
  t.Add("src", true, 1);
  EXPECT_EQ(Conflicts(t, "src/a/b.ts", false),
            (std::vector<HitTuple>{{1, "src", true}}));
  EXPECT_TRUE(Conflicts(t, "srcx/a", true).empty());

  LockTable u;
  u.Add("src/a/b.ts", true, 1);
  u.Add("src/c.ts", false, 2);
  EXPECT_EQ(Conflicts(u, "src", false),
            (std::vector<HitTuple>{{1, "src/a/b.ts", true}}));
  EXPECT_EQ(
      Conflicts(u, "src", true),
      (std::vector<HitTuple>{{1, "src/a/b.ts", true}, {2, "src/c.ts", false}}));
  // The root covers everything.
  EXPECT_EQ(Conflicts(u, "", true).size(), 2u);
  u.Add("", false, 3);
  EXPECT_EQ(Conflicts(u, "x/y", true), (std::vector<HitTuple>{{3, "", false}}));
}

TEST(LockTableTest, GlobLocksAgainstPaths) {
  LockTable t;
  t.Add("src/*.ts", true, 1);
  EXPECT_EQ(Conflicts(t, "src/a.ts", false),
            (std::vector<HitTuple>{{1, "src/*.ts", true}}));
  EXPECT_EQ(Conflicts(t, "src", false).size(), 1u);
  EXPECT_EQ(Conflicts(t, "", false).size(), 1u);
  EXPECT_EQ(Conflicts(t, "src/a.ts/x", false).size(), 1u);
  EXPECT_TRUE(Conflicts(t, "src/a.cc", true).empty());
  EXPECT_TRUE(Conflicts(t, "src/sub/a.ts", true).empty());
  EXPECT_TRUE(Conflicts(t, "lib/a.ts", true).empty());
}

TEST(LockTableTest, PathLocksAgainstGlobs) {
  LockTable t;
  t.Add("src", false, 1);         // an ancestor of the glob's matches
  t.Add("src/a.ts", true, 2);     // matched
  t.Add("src/a.cc", true, 3);     // not matched
  t.Add("src/d/x.ts", true, 4);   // not matched: '*' stays in a component
  t.Add("src/b.ts/y", false, 5);  // below a match
  t.Add("lib/a.ts", true, 6);
  EXPECT_EQ(
      Conflicts(t, "src/*.ts", true),
      (std::vector<HitTuple>{
          {1, "src", false}, {2, "src/a.ts", true}, {5, "src/b.ts/y", false}}));
  EXPECT_EQ(Conflicts(t, "src/*.ts", false),
            (std::vector<HitTuple>{{2, "src/a.ts", true}}));
  EXPECT_EQ(Conflicts(t, "src/d/*.ts", false),
            (std::vector<HitTuple>{{4, "src/d/x.ts", true}}));
  // "**/x.ts" matches "lib/a.ts/x.ts" and so on: it overlaps every path.
  EXPECT_EQ(Conflicts(t, "**/x.ts", false).size(), 4u);
  EXPECT_EQ(Conflicts(t, "**", true).size(), 6u);
}

TEST(LockTableTest, GlobsAgainstGlobs) {
  LockTable t;
  t.Add("src/**/a.ts", true, 1);
  t.Add("src/*.cc", true, 2);
  t.Add("**/*.md", false, 3);
  EXPECT_EQ(Conflicts(t, "src/*.ts", false),
            (std::vector<HitTuple>{{1, "src/**/a.ts", true}}));
  EXPECT_EQ(Conflicts(t, "src/[ab]*.cc", false),
            (std::vector<HitTuple>{{1, "src/**/a.ts", true},  // src/a.cc/a.ts
                                   {2, "src/*.cc", true}}));
  EXPECT_EQ(Conflicts(t, "src/[ab]/*.cc", false),
            (std::vector<HitTuple>{{1, "src/**/a.ts", true}}));
  // src/x.cc/b.ts (below src/*.cc), src/x/b.ts/a.ts (below the query's).
  EXPECT_EQ(Conflicts(t, "src/*/b.ts", false).size(), 2u);
  EXPECT_TRUE(Conflicts(t, "lib/*.ts", false).empty());
  EXPECT_TRUE(Conflicts(t, "lib/**", false).empty());
  EXPECT_EQ(Conflicts(t, "lib/**", true),
            (std::vector<HitTuple>{{3, "**/*.md", false}}));
  EXPECT_EQ(Conflicts(t, "docs/*.md", true),
            (std::vector<HitTuple>{{3, "**/*.md", false}}));
}

TEST(LockTableTest, SkipsTheCallersOwnLocks) {
  LockTable t;
  t.Add("a", true, 7);
  t.Add("a/b", true, 8);
  t.Add("a/*", true, 7);
  EXPECT_EQ(Conflicts(t, "a", true, 7),
            (std::vector<HitTuple>{{8, "a/b", true}}));
  EXPECT_EQ(Conflicts(t, "a", true, 8).size(), 2u);
  EXPECT_EQ(Conflicts(t, "a", true, 0).size(), 3u);
}

TEST(LockTableTest, StopsWhenTheCallbackSaysSo) {
  LockTable t;
  for (uint64_t i = 1; i <= 10; ++i) t.Add("d/f" + std::to_string(i), true, i);
  t.Add("d", true, 11);
  t.Add("*", true, 12);
  for (int stop_after = 1; stop_after <= 12; ++stop_after) {
    int calls = 0;
    t.ForEachConflict("d", true, 0, [&](const LockTable::Hit&) {
      return ++calls < stop_after;
    });
    EXPECT_EQ(calls, stop_after);
    calls = 0;
    t.ForEachConflict("d/**", true, 0, [&](const LockTable::Hit&) {
      return ++calls < stop_after;
    });
    EXPECT_EQ(calls, stop_after);
  }
  int calls = 0;
  t.ForEachCovering("d/f1", [&](const LockTable::Hit&) {
    ++calls;
    return false;
  });
  EXPECT_EQ(calls, 1);
}

TEST(LockTableTest, DeterministicOrder) {
  LockTable t;
  t.Add("s/c", true, 1);
  t.Add("s/a/z", true, 2);
  t.Add("s/b", true, 3);
  t.Add("s/a", true, 4);
  t.Add("s", true, 5);
  t.Add("s", true, 6);
  t.Add("", true, 7);
  EXPECT_EQ(Conflicts(t, "s", true), (std::vector<HitTuple>{{7, "", true},
                                                            {5, "s", true},
                                                            {6, "s", true},
                                                            {4, "s/a", true},
                                                            {2, "s/a/z", true},
                                                            {3, "s/b", true},
                                                            {1, "s/c", true}}));
}

TEST(LockTableTest, HitPathsPointIntoTheTable) {
  LockTable t;
  std::string path = "x/y";
  t.Add(path, true, 1);
  std::string glob = "x/*";
  t.Add(glob, true, 2);
  path = "zzz";
  glob = "zzz";
  std::vector<std::string_view> seen;
  t.ForEachConflict("x", true, 0, [&](const LockTable::Hit& h) {
    seen.push_back(h.path);
    return true;
  });
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], "x/*");
  EXPECT_EQ(seen[1], "x/y");
}

TEST(LockTableTest, DuplicatesAreCountedAndRemovedOneAtATime) {
  LockTable t;
  t.Add("a/b", true, 1);
  t.Add("a/b", true, 1);
  t.Add("a/*", false, 1);
  t.Add("a/*", false, 1);
  EXPECT_EQ(t.size(), 4u);
  EXPECT_EQ(Conflicts(t, "a", true).size(), 4u);
  EXPECT_FALSE(t.Remove("a/b", false, 1));  // wrong mode
  EXPECT_FALSE(t.Remove("a/b", true, 2));   // wrong owner
  EXPECT_FALSE(t.Remove("a/c", true, 1));   // wrong path
  EXPECT_FALSE(t.Remove("a/?", false, 1));  // wrong glob
  EXPECT_TRUE(t.Remove("a/b", true, 1));
  EXPECT_EQ(Conflicts(t, "a/b", false).size(), 1u);
  EXPECT_TRUE(t.Remove("a/b", true, 1));
  EXPECT_FALSE(t.Remove("a/b", true, 1));
  EXPECT_TRUE(Conflicts(t, "a/b", false).empty());
  EXPECT_TRUE(t.Remove("a/*", false, 1));
  EXPECT_TRUE(t.Remove("a/*", false, 1));
  EXPECT_FALSE(t.Remove("a/*", false, 1));
  EXPECT_EQ(t.size(), 0u);
  EXPECT_TRUE(Conflicts(t, "", true).empty());
}

// Remove with the handle Add returned: no lookup, the same bookkeeping
// (counts up the tree, empty nodes deleted), plain and glob locks.
TEST(LockTableTest, RemoveByHandle) {
  LockTable t;
  const LockTable::Handle plain = t.Add("src/a/b.cc", true, 1);
  const LockTable::Handle glob = t.Add("src/a/*.h", false, 2);
  const LockTable::Handle other = t.Add("src/a/c.cc", false, 3);
  EXPECT_EQ(Conflicts(t, "src", true).size(), 3u);
  EXPECT_FALSE(t.Remove(plain, "src/a/b.cc", false, 1));  // wrong mode
  EXPECT_FALSE(t.Remove(glob, "src/a/*.cc", false, 2));   // wrong glob
  EXPECT_TRUE(t.Remove(plain, "src/a/b.cc", true, 1));
  EXPECT_EQ(t.size(), 2u);
  EXPECT_TRUE(Conflicts(t, "src/a/b.cc", false).empty());
  EXPECT_EQ(Conflicts(t, "src/a/x.h", true),
            (std::vector<HitTuple>{{2, "src/a/*.h", false}}));
  EXPECT_TRUE(t.Remove(glob, "src/a/*.h", false, 2));
  EXPECT_TRUE(t.Remove(other, "src/a/c.cc", false, 3));
  EXPECT_EQ(t.size(), 0u);
  EXPECT_TRUE(Conflicts(t, "", true).empty());
  // The emptied nodes are gone: a new lock below makes fresh ones.
  t.Add("src/a/b.cc", true, 4);
  EXPECT_EQ(Conflicts(t, "src/a", false),
            (std::vector<HitTuple>{{4, "src/a/b.cc", true}}));
}

TEST(LockTableTest, CoveringLocks) {
  LockTable t;
  t.Add("", false, 1);
  t.Add("src", true, 2);
  t.Add("src/a", false, 3);
  t.Add("src/a/b.ts", true, 4);  // below the path: does not cover it
  t.Add("src/*", true, 5);       // matches src/a
  t.Add("src/*.ts", true, 6);    // matches neither src/a nor src
  t.Add("**", false, 7);
  t.Add("lib", true, 8);
  EXPECT_EQ(Covering(t, "src/a"), (std::vector<HitTuple>{{1, "", false},
                                                         {7, "**", false},
                                                         {2, "src", true},
                                                         {5, "src/*", true},
                                                         {3, "src/a", false}}));
  EXPECT_EQ(Covering(t, "src/a/c/d").size(), 5u);
  EXPECT_EQ(Covering(t, "src/x.ts").size(), 5u);  // "", **, src, src/*, *.ts
  EXPECT_EQ(Covering(t, "").size(), 2u);          // "", **
}

// A small random lock workload for the brute-force comparisons.
class RandomPaths {
 public:
  explicit RandomPaths(uint32_t seed) : rng_(seed) {}

  std::string Plain() {
    static const std::vector<std::string> kParts = {"a", "b", "c", "ab"};
    return Make(kParts);
  }
  std::string Glob() {
    static const std::vector<std::string> kParts = {
        "a", "b", "c", "ab", "*", "?", "[ab]", "**", "a*", "[!a]", "*b"};
    std::string p;
    do p = Make(kParts);
    while (!IsGlob(p));
    return p;
  }
  std::string Any() { return Pick(4) == 0 ? Glob() : Plain(); }
  size_t Pick(size_t n) {
    return std::uniform_int_distribution<size_t>(0, n - 1)(rng_);
  }

 private:
  std::string Make(const std::vector<std::string>& parts) {
    std::vector<std::string> out(Pick(5));
    for (std::string& s : out) s = parts[Pick(parts.size())];
    return Join(out);
  }

  std::mt19937 rng_;
};

struct Held {
  std::string path;
  bool exclusive;
  uint64_t owner;
};

TEST(LockTableTest, AgreesWithABruteForceScan) {
  for (uint32_t seed = 1; seed <= 4; ++seed) {
    RandomPaths r(seed);
    LockTable t;
    std::vector<Held> held;
    for (int step = 0; step < 3000; ++step) {
      if (!held.empty() && r.Pick(3) == 0) {
        const size_t i = r.Pick(held.size());
        ASSERT_TRUE(t.Remove(held[i].path, held[i].exclusive, held[i].owner));
        held.erase(held.begin() + static_cast<ptrdiff_t>(i));
      } else {
        Held h{r.Any(), r.Pick(3) == 0, 1 + r.Pick(20)};
        t.Add(h.path, h.exclusive, h.owner);
        held.push_back(h);
      }
      ASSERT_EQ(t.size(), held.size());
      if (step % 3 != 0) continue;
      const std::string q = r.Any();
      const bool exclusive = r.Pick(2) == 0;
      const uint64_t self = r.Pick(3) == 0 ? 1 + r.Pick(20) : 0;
      std::vector<HitTuple> expected;
      for (const Held& h : held) {
        if ((exclusive || h.exclusive) && h.owner != self &&
            Overlap(q, h.path)) {
          expected.emplace_back(h.owner, h.path, h.exclusive);
        }
      }
      std::vector<HitTuple> got = Conflicts(t, q, exclusive, self);
      std::sort(expected.begin(), expected.end());
      std::sort(got.begin(), got.end());
      ASSERT_EQ(got, expected) << "query " << q << " exclusive " << exclusive
                               << " self " << self << " step " << step;

      const std::string p = r.Plain();
      expected.clear();
      const std::vector<std::string> parts = RefSplit(p);
      for (const Held& h : held) {
        bool covers = false;
        for (size_t k = 0; k <= parts.size() && !covers; ++k) {
          covers = GlobMatch(h.path, Join(std::vector<std::string>(
                                         parts.begin(), parts.begin() + k)));
        }
        if (covers) expected.emplace_back(h.owner, h.path, h.exclusive);
      }
      got = Covering(t, p);
      std::sort(expected.begin(), expected.end());
      std::sort(got.begin(), got.end());
      ASSERT_EQ(got, expected) << "covering " << p << " step " << step;
    }
  }
}

// A probe recorded by ForEachConflict lets Add skip its lookup, but only
// while it is current: a node created below where it ended, a node deleted
// since, or another table makes Add look the path up again.
TEST(LockTableTest, StaleProbesAreNotUsed) {
  LockTable t;
  auto probe = [&](std::string_view path) {
    LockTable::Probe p;
    t.ForEachConflict(
        path, true, 0, [](const LockTable::Hit&) { return true; }, &p);
    return p;
  };
  t.Add("a/x", true, 1);
  // Ends at "a"; then "a/b" is created on the way to "a/b/c".
  const LockTable::Probe before = probe("a/b/c");
  EXPECT_FALSE(before.exact);
  t.Add("a/b/d", true, 2);
  t.Add("a/b/c", true, 3, &before);
  EXPECT_EQ(Conflicts(t, "a/b", false),
            (std::vector<HitTuple>{{3, "a/b/c", true}, {2, "a/b/d", true}}));
  EXPECT_TRUE(t.Remove("a/b/d", true, 2));
  EXPECT_EQ(Conflicts(t, "a/b", false),
            (std::vector<HitTuple>{{3, "a/b/c", true}}));
  // The node of "a/x" is deleted after the probe found it.
  const LockTable::Probe exact = probe("a/x");
  EXPECT_TRUE(exact.exact);
  EXPECT_TRUE(t.Remove("a/x", true, 1));
  t.Add("a/x", false, 4, &exact);
  EXPECT_EQ(Conflicts(t, "a", true),
            (std::vector<HitTuple>{{3, "a/b/c", true}, {4, "a/x", false}}));
  // A probe of another table.
  LockTable other;
  other.Add("q/r", true, 9);
  LockTable::Probe foreign;
  other.ForEachConflict(
      "q/r", true, 0, [](const LockTable::Hit&) { return true; }, &foreign);
  t.Add("q/r", true, 5, &foreign);
  EXPECT_EQ(Conflicts(t, "q", true), (std::vector<HitTuple>{{5, "q/r", true}}));
  EXPECT_EQ(Conflicts(other, "q", true),
            (std::vector<HitTuple>{{9, "q/r", true}}));
  for (const auto& [owner, path, x] : std::vector<HitTuple>{
           {3, "a/b/c", true}, {4, "a/x", false}, {5, "q/r", true}}) {
    EXPECT_TRUE(t.Remove(path, x, owner)) << path;
  }
  EXPECT_EQ(t.size(), 0u);
  EXPECT_TRUE(Conflicts(t, "**", true).empty());
}

// Adds with probes recorded at random earlier steps (most of them stale)
// keep the table equal to a brute-force list.
TEST(LockTableTest, AddsWithOldProbesAgreeWithABruteForceScan) {
  for (uint32_t seed = 1; seed <= 4; ++seed) {
    RandomPaths r(seed);
    LockTable t;
    std::vector<Held> held;
    std::vector<std::pair<std::string, LockTable::Probe>> probes;
    for (int step = 0; step < 3000; ++step) {
      const int what = static_cast<int>(r.Pick(4));
      if (what == 0 && !held.empty()) {
        const size_t i = r.Pick(held.size());
        ASSERT_TRUE(t.Remove(held[i].path, held[i].exclusive, held[i].owner));
        held.erase(held.begin() + static_cast<ptrdiff_t>(i));
      } else if (what == 1 || probes.empty()) {
        std::string q = r.Any();
        LockTable::Probe p;
        t.ForEachConflict(
            q, r.Pick(2) == 0, 0, [](const LockTable::Hit&) { return true; },
            &p);
        probes.emplace_back(std::move(q), p);
      } else {
        const auto& [path, p] = probes[r.Pick(probes.size())];
        Held h{path, r.Pick(3) == 0, 1 + r.Pick(20)};
        t.Add(h.path, h.exclusive, h.owner, &p);
        held.push_back(h);
      }
      ASSERT_EQ(t.size(), held.size());
      const std::string q = r.Any();
      std::vector<HitTuple> expected;
      for (const Held& h : held) {
        if (Overlap(q, h.path)) {
          expected.emplace_back(h.owner, h.path, h.exclusive);
        }
      }
      std::vector<HitTuple> got = Conflicts(t, q, true);
      std::sort(expected.begin(), expected.end());
      std::sort(got.begin(), got.end());
      ASSERT_EQ(got, expected) << "query " << q << " step " << step;
    }
    for (const Held& h : held) {
      ASSERT_TRUE(t.Remove(h.path, h.exclusive, h.owner));
    }
    EXPECT_TRUE(Conflicts(t, "**", true).empty());
  }
}

TEST(LockTableTest, ChurnLeavesNothingBehind) {
  std::mt19937 rng(42);
  auto pick = [&](int n) {
    return std::uniform_int_distribution<int>(0, n - 1)(rng);
  };
  LockTable t;
  std::vector<Held> held;
  for (int i = 0; i < 10000; ++i) {
    std::string path = "d" + std::to_string(pick(30));
    for (int d = pick(4); d > 0; --d) path += "/n" + std::to_string(pick(30));
    if (pick(10) == 0) path += "/*.x";
    held.push_back({path, pick(2) == 0, static_cast<uint64_t>(1 + pick(100))});
    t.Add(held.back().path, held.back().exclusive, held.back().owner);
  }
  EXPECT_EQ(t.size(), 10000u);
  std::shuffle(held.begin(), held.end(), rng);
  for (const Held& h : held)
    ASSERT_TRUE(t.Remove(h.path, h.exclusive, h.owner));
  EXPECT_EQ(t.size(), 0u);
  EXPECT_TRUE(Conflicts(t, "", true).empty());
  EXPECT_TRUE(Conflicts(t, "**", true).empty());
  EXPECT_TRUE(Covering(t, "d1/n1/n1").empty());
  // The table is usable again.
  t.Add("d1/n1", true, 1);
  EXPECT_EQ(Conflicts(t, "d1", false).size(), 1u);
}

// The index from full path to node must follow every node the tree gains
// and loses: files, directories above them, globs (on their fixed prefix)
// and the root, added and removed in either order.
TEST(LockTableTest, IndexFollowsFilesDirectoriesGlobsAndTheRoot) {
  LockTable t;
  t.Add("a/b/c.cc", true, 1);
  t.Add("a/b", false, 2);     // a directory whose node exists
  t.Add("a/b/*.h", true, 3);  // a glob on that node
  t.Add("", false, 4);        // the root
  t.Add("a/x/y/z", true, 5);  // creates a/x and a/x/y
  EXPECT_EQ(Covering(t, "a/b/c.cc"),
            (std::vector<HitTuple>{
                {4, "", false}, {2, "a/b", false}, {1, "a/b/c.cc", true}}));
  // Dropping the file keeps a/b (its lock and glob are still there).
  EXPECT_TRUE(t.Remove("a/b/c.cc", true, 1));
  EXPECT_FALSE(t.Remove("a/b/c.cc", true, 1));
  EXPECT_EQ(Covering(t, "a/b/c.cc"),
            (std::vector<HitTuple>{{4, "", false}, {2, "a/b", false}}));
  EXPECT_EQ(Conflicts(t, "a/b/q.h", false),
            (std::vector<HitTuple>{{3, "a/b/*.h", true}}));
  // The directory's own lock goes; the node stays for the glob.
  EXPECT_TRUE(t.Remove("a/b", false, 2));
  EXPECT_EQ(Conflicts(t, "a/b", true),
            (std::vector<HitTuple>{{4, "", false}, {3, "a/b/*.h", true}}));
  EXPECT_TRUE(t.Remove("a/b/*.h", true, 3));
  EXPECT_FALSE(t.Remove("a/b", false, 2));
  // a/x/y/z alone is left below the root lock.
  EXPECT_EQ(Conflicts(t, "a", true),
            (std::vector<HitTuple>{{4, "", false}, {5, "a/x/y/z", true}}));
  EXPECT_TRUE(t.Remove("", false, 4));
  EXPECT_EQ(Conflicts(t, "", false),
            (std::vector<HitTuple>{{5, "a/x/y/z", true}}));
  EXPECT_TRUE(t.Remove("a/x/y/z", true, 5));
  EXPECT_EQ(t.size(), 0u);
  EXPECT_TRUE(Conflicts(t, "**", true).empty());
  EXPECT_TRUE(Covering(t, "a/x/y/z").empty());
  // Everything can come back, nodes in a new order (a deep one first).
  t.Add("a/x/y/z", false, 6);
  t.Add("a/x", true, 7);
  t.Add("a", false, 8);
  EXPECT_EQ(Covering(t, "a/x/y/z/w"),
            (std::vector<HitTuple>{
                {8, "a", false}, {7, "a/x", true}, {6, "a/x/y/z", false}}));
  std::vector<HitTuple> all;
  t.ForEachLock([&](const LockTable::Hit& h) {
    all.emplace_back(h.owner, std::string(h.path), h.exclusive);
  });
  EXPECT_EQ(all,
            (std::vector<HitTuple>{
                {8, "a", false}, {7, "a/x", true}, {6, "a/x/y/z", false}}));
}

// A path whose own node (and its parent's) do not exist is still covered by
// the locks and globs on the ancestors that do.
TEST(LockTableTest, AncestorLocksCoverPathsWithoutNodes) {
  LockTable t;
  t.Add("src", false, 1);
  t.Add("src/lib/*.cc", true, 2);
  t.Add("src/lib/other/file", true, 3);
  EXPECT_EQ(Conflicts(t, "src/app/deep/er/x.cc", true),
            (std::vector<HitTuple>{{1, "src", false}}));
  EXPECT_TRUE(Conflicts(t, "src/app/deep/er/x.cc", false).empty());
  EXPECT_EQ(Conflicts(t, "src/lib/a.cc/b/c", false),
            (std::vector<HitTuple>{{2, "src/lib/*.cc", true}}));
  EXPECT_TRUE(Conflicts(t, "src/lib/a.h/b/c", false).empty());
  EXPECT_EQ(
      Covering(t, "src/lib/a.cc/b/c"),
      (std::vector<HitTuple>{{1, "src", false}, {2, "src/lib/*.cc", true}}));
  // A glob query whose fixed prefix has no node sees only the ancestors.
  EXPECT_EQ(Conflicts(t, "src/app/*/x", true),
            (std::vector<HitTuple>{{1, "src", false}}));
  EXPECT_EQ(Conflicts(t, "src/lib/*/file", false),
            (std::vector<HitTuple>{{2, "src/lib/*.cc", true},
                                   {3, "src/lib/other/file", true}}));
  // A path that shares a prefix of bytes, not of components, is unrelated.
  EXPECT_TRUE(Conflicts(t, "srcx/lib/a.cc", true).empty());
  EXPECT_EQ(Conflicts(t, "src/li", true).size(), 1u);
}

// Many files under one directory: each is found by its full path, a file
// not held conflicts with nothing, and removing them one by one (in an
// order unrelated to the adding) leaves the others findable.
TEST(LockTableTest, ManyPathsUnderOneDirectory) {
  LockTable t;
  constexpr int kFiles = 2000;
  auto file = [](int i) { return "src/dir/file" + std::to_string(i) + ".cc"; };
  for (int i = 0; i < kFiles; ++i) t.Add(file(i), i % 2 == 0, 1 + i);
  EXPECT_EQ(t.size(), static_cast<size_t>(kFiles));
  std::vector<int> order(kFiles);
  for (int i = 0; i < kFiles; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  for (size_t k = 0; k < order.size(); ++k) {
    const int i = order[k];
    ASSERT_EQ(Conflicts(t, file(i), true),
              (std::vector<HitTuple>{{1 + i, file(i), i % 2 == 0}}))
        << file(i);
    ASSERT_TRUE(Conflicts(t, file(i) + "x", true).empty());
    if (k % 2 == 0) {
      ASSERT_TRUE(t.Remove(file(i), i % 2 == 0, 1 + i));
    }
  }
  EXPECT_EQ(t.size(), static_cast<size_t>(kFiles / 2));
  // The directory reports the files left, in byte order of their names.
  std::vector<HitTuple> below = Conflicts(t, "src/dir", true);
  ASSERT_EQ(below.size(), static_cast<size_t>(kFiles / 2));
  EXPECT_TRUE(std::is_sorted(below.begin(), below.end(),
                             [](const HitTuple& a, const HitTuple& b) {
                               return std::get<1>(a) < std::get<1>(b);
                             }));
  for (size_t k = 1; k < order.size(); k += 2) {
    const int i = order[k];
    ASSERT_TRUE(t.Remove(file(i), i % 2 == 0, 1 + i));
  }
  EXPECT_EQ(t.size(), 0u);
  EXPECT_TRUE(Conflicts(t, "src", true).empty());
}

// A path thousands of components deep: found by halves when its own node
// and its parent's are missing; every ancestor still reported.
TEST(LockTableTest, DeepPaths) {
  std::string deep = "d";
  for (int i = 0; i < 3000; ++i) deep += "/d";
  LockTable t;
  t.Add(deep, true, 1);
  t.Add("d/d", false, 2);
  EXPECT_EQ(Conflicts(t, deep + "/x", true),
            (std::vector<HitTuple>{{2, "d/d", false}, {1, deep, true}}));
  EXPECT_EQ(Covering(t, deep).size(), 2u);
  // Missing nodes at every depth below the deepest lock.
  for (int extra : {1, 2, 3, 10, 100}) {
    std::string below = deep;
    for (int i = 0; i < extra; ++i) below += "/e";
    EXPECT_EQ(Covering(t, below).size(), 2u) << extra;
  }
  std::string beside = "d";
  for (int i = 0; i < 1500; ++i) beside += "/d";
  beside += "/other";
  for (int i = 0; i < 1500; ++i) beside += "/d";
  EXPECT_EQ(Conflicts(t, beside, true),
            (std::vector<HitTuple>{{2, "d/d", false}}));
  EXPECT_EQ(Conflicts(t, "d", true).size(), 2u);
  EXPECT_TRUE(t.Remove(deep, true, 1));
  EXPECT_EQ(Conflicts(t, "d", true),
            (std::vector<HitTuple>{{2, "d/d", false}}));
  EXPECT_TRUE(t.Remove("d/d", false, 2));
  EXPECT_EQ(t.size(), 0u);
}

}  // namespace
}  // namespace qm::paths
