// Fixture trees for the system detection tests: the checked-in trees under
// tests/sys/fixtures/, and temporary copies that a test can change.
#ifndef QM_TESTS_SYS_SYS_TEST_UTIL_H_
#define QM_TESTS_SYS_SYS_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

namespace qm::sys {

inline std::string FixturePath(const std::string& name) {
  return std::string(QM_SOURCE_DIR) + "/tests/sys/fixtures/" + name;
}

// A temporary directory, optionally a copy of a fixture tree; removed at
// the end of the test.
class TempTree {
 public:
  explicit TempTree(const std::string& fixture = "") {
    std::string dir =
        (std::filesystem::temp_directory_path() / "qm-sys-XXXXXX").string();
    EXPECT_NE(mkdtemp(dir.data()), nullptr);
    root_ = dir;
    if (!fixture.empty()) {
      std::filesystem::copy(FixturePath(fixture), root_,
                            std::filesystem::copy_options::recursive);
    }
  }
  ~TempTree() {
    std::error_code ignored;
    std::filesystem::remove_all(root_, ignored);
  }
  TempTree(const TempTree&) = delete;
  TempTree& operator=(const TempTree&) = delete;

  const std::string& root() const { return root_; }
  // root() + rel; `rel` starts with '/'.
  std::string Path(const std::string& rel) const { return root_ + rel; }

  void Write(const std::string& rel, const std::string& text) const {
    const std::filesystem::path path = Path(rel);
    std::filesystem::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    ASSERT_TRUE(out.good()) << path;
  }
  void Remove(const std::string& rel) const {
    ASSERT_TRUE(std::filesystem::remove(Path(rel))) << rel;
  }
  void Copy(const std::string& from_rel, const std::string& to_rel) const {
    std::filesystem::copy_file(
        Path(from_rel), Path(to_rel),
        std::filesystem::copy_options::overwrite_existing);
  }

 private:
  std::string root_;
};

}  // namespace qm::sys

#endif  // QM_TESTS_SYS_SYS_TEST_UTIL_H_
