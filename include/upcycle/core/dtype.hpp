#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace upcycle {

// f64 exists for the CPU backend so that gradients can be checked by finite differences in
// double; bf16 is a tag reserved for the GPU backend.
enum class DType : std::uint8_t { f32, f64, i32, i64, bf16 };
enum class Device : std::uint8_t { cpu, cuda };

std::size_t dtype_size(DType t);
const char* dtype_name(DType t);
const char* device_name(Device d);
inline bool is_floating(DType t) { return t == DType::f32 || t == DType::f64 || t == DType::bf16; }

template <class T>
struct dtype_of;
template <>
struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <>
struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <>
struct dtype_of<std::int32_t> { static constexpr DType value = DType::i32; };
template <>
struct dtype_of<std::int64_t> { static constexpr DType value = DType::i64; };

}  // namespace upcycle
