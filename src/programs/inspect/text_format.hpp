#pragma once
// Numbers, shapes and sizes as the text views print them.
#include <cstdint>
#include <string>
#include <vector>

#include "upcycle/core/shape.hpp"

namespace upcycle::inspect {

// %.*g, or nan / inf / -inf.
std::string format_number(double v, int digits = 4);
std::string format_numbers(const std::vector<double>& values, int digits = 4);  // space-separated
std::string format_integers(const std::vector<std::int64_t>& values);
std::string format_shape(const Shape& shape);  // [4, 32, 16]; [] for a scalar
std::string format_bytes(std::uintmax_t bytes);  // 177.9 KiB (177896 bytes)
// `text` padded with spaces to `width` columns on the right (left-aligned) or the left.
std::string pad_right(const std::string& text, std::size_t width);
std::string pad_left(const std::string& text, std::size_t width);

}  // namespace upcycle::inspect
