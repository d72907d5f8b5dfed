#include "sim/yaml_json.h"

#include <yaml-cpp/yaml.h>

#include <cstdlib>

namespace qm::sim {

api::Json ToJsonValue(const YAML::Node& n) {
  using api::Json;
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Sequence: {
      Json a = Json::array();
      for (const auto& item : n) a.push_back(ToJsonValue(item));
      return a;
    }
    case YAML::NodeType::Map: {
      Json o = Json::object();
      for (const auto& kv : n) {
        o[kv.first.as<std::string>()] = ToJsonValue(kv.second);
      }
      return o;
    }
    case YAML::NodeType::Scalar:
      break;
  }
  const std::string s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted
  if (s == "true") return true;
  if (s == "false") return false;
  if (s == "null" || s == "~") return nullptr;
  if (!s.empty() && s.size() < 32) {
    char* end = nullptr;
    if (s.find_first_not_of("+-0123456789") == std::string::npos) {
      const long long i = std::strtoll(s.c_str(), &end, 10);
      if (*end == '\0') return i;
    }
    if (s.find_first_not_of("+-0123456789.eE") == std::string::npos) {
      const double d = std::strtod(s.c_str(), &end);
      if (*end == '\0') return d;
    }
  }
  return s;
}

}  // namespace qm::sim
