#include "upcycle/nn/module.hpp"

#include <cstdio>

namespace upcycle::nn {

void Module::for_each_parameter(const std::string& prefix,
                                const std::function<void(const std::string&, Var&)>& f) const {
  for (const auto& [n, p] : params_) f(prefix + n, *p);
  for (const auto& [n, child] : children_) child->for_each_parameter(prefix + n + "/", f);
}

std::vector<std::pair<std::string, Var>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Var>> out;
  for_each_parameter("", [&](const std::string& name, Var& p) { out.emplace_back(name, p); });
  return out;
}

std::vector<Var> Module::parameters() const {
  std::vector<Var> out;
  for_each_parameter("", [&](const std::string&, Var& p) { out.push_back(p); });
  return out;
}

const Var* Module::find(const std::string& name) const {
  const auto slash = name.find('/');
  if (slash == std::string::npos) {
    for (const auto& [n, p] : params_)
      if (n == name) return p;
    return nullptr;
  }
  const std::string head = name.substr(0, slash);
  for (const auto& [n, m] : children_)
    if (n == head) return m->find(name.substr(slash + 1));
  return nullptr;
}

bool Module::has_parameter(const std::string& name) const { return find(name) != nullptr; }

const Var& Module::parameter(const std::string& name) const {
  if (const Var* p = find(name)) return *p;
  // List what exists (capped, a large model has hundreds of names) so a typo is easy to spot.
  const auto named = named_parameters();
  std::string known;
  for (std::size_t i = 0; i < named.size() && i < 24; ++i) known += (i ? ", " : "") + named[i].first;
  if (named.size() > 24) known += ", ... (" + std::to_string(named.size()) + " in all)";
  UPCYCLE_THROW("no parameter named '", name, "'; this module has: ", known);
}

Var& Module::parameter(const std::string& name) {
  return const_cast<Var&>(static_cast<const Module*>(this)->parameter(name));
}

std::int64_t Module::num_parameters() const {
  std::int64_t n = 0;
  for (const Var& p : parameters()) n += p.value().numel();
  return n;
}

void Module::zero_grad() {
  for_each_parameter("", [](const std::string&, Var& p) { p.zero_grad(); });
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, m] : children_) m->train(on);
}

void Module::to(DType dtype) {
  UPCYCLE_CHECK(is_floating(dtype), "Module::to: parameters must be floating, got ", dtype_name(dtype));
  for_each_parameter("", [dtype](const std::string&, Var& p) {
    p.zero_grad();
    p.value() = p.value().to(dtype);
  });
}

void Module::to(Device device) {
  for_each_parameter("", [device](const std::string&, Var& p) {
    p.zero_grad();
    p.value() = p.value().to(device);
  });
  move_tree_state(device);
}

void Module::move_tree_state(Device device) {
  move_state(device);
  for (auto& [n, m] : children_) m->move_tree_state(device);
}

Device Module::device() const {
  Device d = Device::cpu;
  bool found = false;
  for_each_parameter("", [&](const std::string&, Var& p) {
    if (!found) d = p.device();
    found = true;
  });
  return d;
}

void Module::check_new_name(const std::string& name) const {
  UPCYCLE_CHECK(!name.empty() && name.find('/') == std::string::npos,
                "module member names must be non-empty and contain no '/', got '", name, "'");
  for (const auto& [n, p] : params_) UPCYCLE_CHECK(n != name, "duplicate member name '", name, "'");
  for (const auto& [n, m] : children_) UPCYCLE_CHECK(n != name, "duplicate member name '", name, "'");
}

void Module::register_parameter(const std::string& name, Var& parameter) {
  check_new_name(name);
  UPCYCLE_CHECK(parameter.defined() && parameter.requires_grad(), "parameter '", name,
                "' must be a defined leaf that requires grad");
  params_.emplace_back(name, &parameter);
}

void Module::register_module(const std::string& name, Module& module) {
  check_new_name(name);
  children_.emplace_back(name, &module);
}

std::string index_name(std::size_t i, int width) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%0*zu", width, i);
  return buf;
}


}  // namespace upcycle::nn
