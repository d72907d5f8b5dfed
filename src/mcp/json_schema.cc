#include "mcp/json_schema.h"

#include <cmath>
#include <set>
#include <string_view>
#include <vector>

namespace qm::mcp {
namespace {

using Json = nlohmann::json;

std::string Dump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string NumberText(const Json& n) {
  if (n.is_number_integer()) return Dump(n);
  const double d = n.get<double>();
  if (d == std::floor(d) && std::fabs(d) < 1e15) {
    return std::to_string(static_cast<int64_t>(d));
  }
  return Dump(n);
}

bool IsIntegral(const Json& v) {
  if (v.is_number_integer()) return true;
  if (!v.is_number_float()) return false;
  const double d = v.get<double>();
  return std::isfinite(d) && d == std::floor(d);
}

bool HasType(const Json& v, std::string_view type) {
  if (type == "object") return v.is_object();
  if (type == "array") return v.is_array();
  if (type == "string") return v.is_string();
  if (type == "boolean") return v.is_boolean();
  if (type == "null") return v.is_null();
  if (type == "number") return v.is_number();
  if (type == "integer") return IsIntegral(v);
  return false;
}

std::string Article(std::string_view type) {
  if (type == "object" || type == "array" || type == "integer") {
    return "an " + std::string(type);
  }
  if (type == "null") return "null";
  if (type == "boolean") return "true or false";
  return "a " + std::string(type);
}

// A short description of what `schema` accepts, for error messages.
std::string Describe(const Json& schema) {
  if (!schema.is_object()) return "anything";
  if (schema.contains("enum") && schema["enum"].is_array()) {
    std::string s = "one of ";
    bool first = true;
    for (const Json& e : schema["enum"]) {
      s += (first ? "" : ", ") + Dump(e);
      first = false;
    }
    return s;
  }
  if (schema.contains("const")) return Dump(schema["const"]);
  std::string s;
  if (schema.contains("type")) {
    const Json& t = schema["type"];
    if (t.is_string()) {
      s = Article(t.get<std::string>());
    } else if (t.is_array()) {
      for (size_t i = 0; i < t.size(); ++i) {
        if (!t[i].is_string()) continue;
        s += (i == 0 ? "" : (i + 1 == t.size() ? " or " : ", ")) +
             Article(t[i].get<std::string>());
      }
    }
  } else {
    s = "a value";
  }
  const bool has_min =
      schema.contains("minimum") && schema["minimum"].is_number();
  const bool has_max =
      schema.contains("maximum") && schema["maximum"].is_number();
  if (has_min && has_max) {
    s += " from " + NumberText(schema["minimum"]) + " to " +
         NumberText(schema["maximum"]);
  } else if (has_min) {
    s += " >= " + NumberText(schema["minimum"]);
  } else if (has_max) {
    s += " <= " + NumberText(schema["maximum"]);
  }
  if (schema.contains("exclusiveMinimum") &&
      schema["exclusiveMinimum"].is_number()) {
    s += " greater than " + NumberText(schema["exclusiveMinimum"]);
  }
  return s;
}

std::string Join(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

Status Fail(const std::string& path, const std::string& what) {
  return InvalidRequest((path.empty() ? std::string("value") : path) + ": " +
                        what);
}

}  // namespace

Status ValidateJson(const Json& schema, const Json& value,
                    const std::string& path) {
  if (schema.is_boolean()) {
    return schema.get<bool>() ? Status::Ok() : Fail(path, "is not allowed");
  }
  if (!schema.is_object()) return Status::Ok();

  if (schema.contains("type")) {
    const Json& t = schema["type"];
    bool match = false;
    if (t.is_string()) {
      match = HasType(value, t.get<std::string>());
    } else if (t.is_array()) {
      for (const Json& one : t) {
        if (one.is_string() && HasType(value, one.get<std::string>())) {
          match = true;
        }
      }
    } else {
      match = true;
    }
    if (!match) {
      Json only_type = Json::object();
      only_type["type"] = t;
      return Fail(path, "must be " + Describe(only_type) + ", not " +
                            (value.is_null() ? std::string("null")
                                             : std::string(value.type_name())));
    }
  }

  if (schema.contains("enum") && schema["enum"].is_array()) {
    bool found = false;
    for (const Json& e : schema["enum"]) {
      if (e == value) found = true;
    }
    if (!found) return Fail(path, "must be " + Describe(schema));
  }
  if (schema.contains("const") && schema["const"] != value) {
    return Fail(path, "must be " + Dump(schema["const"]));
  }

  if (value.is_number()) {
    const double v = value.get<double>();
    auto num = [&](const char* k) -> const Json* {
      return schema.contains(k) && schema[k].is_number() ? &schema[k] : nullptr;
    };
    if (const Json* m = num("minimum"); m && v < m->get<double>()) {
      return Fail(path, "must be at least " + NumberText(*m));
    }
    if (const Json* m = num("maximum"); m && v > m->get<double>()) {
      return Fail(path, "must be at most " + NumberText(*m));
    }
    if (const Json* m = num("exclusiveMinimum"); m && v <= m->get<double>()) {
      return Fail(path, "must be greater than " + NumberText(*m));
    }
    if (const Json* m = num("exclusiveMaximum"); m && v >= m->get<double>()) {
      return Fail(path, "must be less than " + NumberText(*m));
    }
  }

  if (value.is_string()) {
    // Lengths in bytes; the schemas only bound them loosely.
    const size_t n = value.get_ref<const std::string&>().size();
    if (schema.contains("minLength") && schema["minLength"].is_number() &&
        n < schema["minLength"].get<double>()) {
      return Fail(path, schema["minLength"].get<double>() == 1
                            ? "must not be empty"
                            : "must be at least " +
                                  NumberText(schema["minLength"]) +
                                  " characters long");
    }
    if (schema.contains("maxLength") && schema["maxLength"].is_number() &&
        n > schema["maxLength"].get<double>()) {
      return Fail(path, "must be at most " + NumberText(schema["maxLength"]) +
                            " characters long");
    }
  }

  if (value.is_array()) {
    if (schema.contains("minItems") && schema["minItems"].is_number() &&
        value.size() < schema["minItems"].get<double>()) {
      return Fail(path, "must have at least " + NumberText(schema["minItems"]) +
                            " items");
    }
    if (schema.contains("maxItems") && schema["maxItems"].is_number() &&
        value.size() > schema["maxItems"].get<double>()) {
      return Fail(path, "must have at most " + NumberText(schema["maxItems"]) +
                            " items");
    }
    if (schema.contains("items")) {
      for (size_t i = 0; i < value.size(); ++i) {
        QM_RETURN_IF_ERROR(ValidateJson(schema["items"], value[i],
                                        path + "[" + std::to_string(i) + "]"));
      }
    }
  }

  if (value.is_object()) {
    const Json empty = Json::object();
    const Json& props =
        schema.contains("properties") && schema["properties"].is_object()
            ? schema["properties"]
            : empty;
    if (schema.contains("required") && schema["required"].is_array()) {
      for (const Json& r : schema["required"]) {
        if (r.is_string() && !value.contains(r.get<std::string>())) {
          return Fail(Join(path, r.get<std::string>()), "required");
        }
      }
    }
    if (schema.contains("minProperties") &&
        schema["minProperties"].is_number() &&
        value.size() < schema["minProperties"].get<double>()) {
      return Fail(path, "must have at least " +
                            NumberText(schema["minProperties"]) + " fields");
    }
    for (const auto& [key, v] : value.items()) {
      if (props.contains(key)) {
        QM_RETURN_IF_ERROR(ValidateJson(props[key], v, Join(path, key)));
        continue;
      }
      if (!schema.contains("additionalProperties")) continue;
      const Json& extra = schema["additionalProperties"];
      if (extra.is_boolean() && !extra.get<bool>()) {
        std::string known;
        for (const auto& [k, unused] : props.items()) {
          known += (known.empty() ? "" : ", ") + k;
        }
        return Fail(Join(path, key),
                    "unknown field" + (known.empty()
                                           ? std::string()
                                           : " (known fields: " + known + ")"));
      }
      QM_RETURN_IF_ERROR(ValidateJson(extra, v, Join(path, key)));
    }
  }

  if (schema.contains("oneOf") && schema["oneOf"].is_array()) {
    int matches = 0;
    std::string forms;
    for (const Json& alt : schema["oneOf"]) {
      if (ValidateJson(alt, value, path).ok()) ++matches;
      forms += (forms.empty() ? "" : ", or ") + Describe(alt);
    }
    if (matches != 1) {
      if (matches == 0 && schema["oneOf"].size() == 1) {
        return ValidateJson(schema["oneOf"][0], value, path);
      }
      return Fail(path, matches == 0 ? "must be " + forms
                                     : "is ambiguous: it matches more than "
                                       "one of " +
                                           forms);
    }
  }
  if (schema.contains("anyOf") && schema["anyOf"].is_array()) {
    Status first;
    bool any = false;
    for (const Json& alt : schema["anyOf"]) {
      Status s = ValidateJson(alt, value, path);
      if (s.ok()) {
        any = true;
        break;
      }
      if (first.ok()) first = std::move(s);
    }
    if (!any && !schema["anyOf"].empty()) {
      // An anyOf of `required` lists (one of several fields must be
      // given) is worth saying as such.
      std::string names;
      bool all_required = true;
      for (const Json& alt : schema["anyOf"]) {
        if (!alt.is_object() || alt.size() != 1 || !alt.contains("required")) {
          all_required = false;
          break;
        }
        for (const Json& r : alt["required"]) {
          names += (names.empty() ? "" : " or ") + r.get<std::string>();
        }
      }
      if (all_required) return Fail(path, "give " + names);
      return first;
    }
  }
  return Status::Ok();
}

bool SchemaKeywordsSupported(const Json& schema, std::string* bad) {
  static const std::set<std::string> kKnown = {"type",
                                               "properties",
                                               "required",
                                               "additionalProperties",
                                               "items",
                                               "enum",
                                               "const",
                                               "minimum",
                                               "maximum",
                                               "exclusiveMinimum",
                                               "exclusiveMaximum",
                                               "minLength",
                                               "maxLength",
                                               "minItems",
                                               "maxItems",
                                               "minProperties",
                                               "oneOf",
                                               "anyOf",
                                               "title",
                                               "description",
                                               "default",
                                               "examples",
                                               "format",
                                               "$schema"};
  struct Item {
    const Json* schema;
    std::string path;
  };
  std::vector<Item> todo = {{&schema, ""}};
  while (!todo.empty()) {
    Item it = todo.back();
    todo.pop_back();
    const Json& s = *it.schema;
    if (!s.is_object()) continue;
    for (const auto& [key, value] : s.items()) {
      if (!kKnown.count(key)) {
        if (bad) *bad = Join(it.path, key);
        return false;
      }
      const std::string here = Join(it.path, key);
      if (key == "properties" && value.is_object()) {
        for (const auto& [name, sub] : value.items()) {
          todo.push_back({&sub, Join(here, name)});
        }
      } else if ((key == "items" || key == "additionalProperties") &&
                 value.is_object()) {
        todo.push_back({&value, here});
      } else if ((key == "oneOf" || key == "anyOf") && value.is_array()) {
        for (size_t i = 0; i < value.size(); ++i) {
          todo.push_back({&value[i], here + "[" + std::to_string(i) + "]"});
        }
      }
    }
  }
  return true;
}

}  // namespace qm::mcp
