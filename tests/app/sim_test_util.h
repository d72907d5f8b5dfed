// Test helpers for simulator scenarios given as text: run one, keep its
// output and parsed JSON lines, and find lines by a key's value.
#ifndef QM_TESTS_APP_SIM_TEST_UTIL_H_
#define QM_TESTS_APP_SIM_TEST_UTIL_H_

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "sim/simulator.h"

namespace qm::sim_test {

using Json = nlohmann::json;

struct SimRun {
  Status status;
  std::string text;         // everything printed
  std::vector<Json> lines;  // the lines that are JSON
};

inline SimRun RunYaml(const std::string& yaml,
                      const sim::RunOptions& options = {}) {
  std::ostringstream out;
  SimRun r;
  r.status = sim::RunScenarioString(yaml, "s.yaml", ".", out, nullptr, options);
  r.text = out.str();
  std::istringstream in(r.text);
  for (std::string line; std::getline(in, line);) {
    if (Json::accept(line)) r.lines.push_back(Json::parse(line));
  }
  return r;
}

// The first line whose `key` equals `value`, or null.
inline const Json* Find(const std::vector<Json>& lines, const std::string& key,
                        const std::string& value) {
  for (const Json& l : lines) {
    if (l.contains(key) && l[key] == value) return &l;
  }
  return nullptr;
}

// Every line whose `key` equals `value`.
inline std::vector<const Json*> FindAll(const std::vector<Json>& lines,
                                        const std::string& key,
                                        const std::string& value) {
  std::vector<const Json*> out;
  for (const Json& l : lines) {
    if (l.contains(key) && l[key] == value) out.push_back(&l);
  }
  return out;
}

}  // namespace qm::sim_test

#endif  // QM_TESTS_APP_SIM_TEST_UTIL_H_
