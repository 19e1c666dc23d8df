#pragma once
// An ordered list of sub-modules named "00", "01", ... so that a model registering it as "blocks"
// gets parameter names like "blocks/03/attn/qkv/weight" that sort in layer order.
#include <memory>
#include <utility>
#include <vector>

#include "upcycle/nn/module.hpp"

namespace upcycle::nn {

template <class M>
class ModuleList : public Module {
 public:
  // Appends and registers `m`; returns it. Indices are padded to two digits (100+ still works,
  // it just stops sorting lexicographically).
  M& push_back(std::unique_ptr<M> m) {
    UPCYCLE_CHECK(m != nullptr, "ModuleList::push_back of a null module");
    items_.push_back(std::move(m));
    register_module(index_name(items_.size() - 1), *items_.back());
    return *items_.back();
  }
  std::size_t size() const { return items_.size(); }
  M& operator[](std::size_t i) { return *items_.at(i); }
  const M& operator[](std::size_t i) const { return *items_.at(i); }

 private:
  std::vector<std::unique_ptr<M>> items_;
};

}  // namespace upcycle::nn
