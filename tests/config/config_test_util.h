// Helpers shared by the configuration tests.
#ifndef QM_TESTS_CONFIG_CONFIG_TEST_UTIL_H_
#define QM_TESTS_CONFIG_CONFIG_TEST_UTIL_H_

#include <absl/time/time.h>
#include <gtest/gtest.h>

#include <string>

#include "qm/config.h"
#include "qm/config_loader.h"
#include "qm/status.h"

namespace qm::testing_util {

// Loads `yaml` named "limits.yml" and expects success.
inline Config Load(const std::string& yaml) {
  StatusOr<Config> config = LoadConfigString(yaml, "limits.yml");
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  return config.ok() ? *config : Config::Defaults();
}

// Loads `yaml` named "limits.yml" and returns the error message ("" if it
// loaded). Every configuration error must be INVALID_REQUEST.
inline std::string LoadError(const std::string& yaml) {
  StatusOr<Config> config = LoadConfigString(yaml, "limits.yml");
  if (config.ok()) return "";
  EXPECT_EQ(config.status().code(), Code::kInvalidRequest)
      << config.status().ToString();
  return config.status().message();
}

// Whether the host has a time zone database (tzdata); without one only "UTC"
// loads, and tests of named zones skip or fall back to UTC.
inline bool HaveTzdata() {
  absl::TimeZone zone;
  return absl::LoadTimeZone("Europe/Berlin", &zone);
}

}  // namespace qm::testing_util

#endif  // QM_TESTS_CONFIG_CONFIG_TEST_UTIL_H_
