// Input checks shared by the CPU and CUDA entry points: every message names the argument and its shape.
#pragma once

#include <ATen/ATen.h>

#include <sstream>
#include <string>
#include <tuple>

namespace deformable_detr_ops {

// Sizes of one call, read from the tensors' shapes.
struct AttentionSizes {
  int64_t batch;        // N
  int64_t num_values;   // S = sum over levels of h * w
  int64_t heads;        // M
  int64_t channels;     // D
  int64_t num_queries;  // Lq
  int64_t levels;       // L
  int64_t points;       // P
};

inline AttentionSizes check_attention_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be [N, S, M, D], got shape ", value.sizes());
  TORCH_CHECK(
      sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
      "ms_deform_attn: sampling_locations must be [N, Lq, M, L, P, 2], got shape ",
      sampling_locations.sizes());
  const AttentionSizes sizes{
      value.size(0),
      value.size(1),
      value.size(2),
      value.size(3),
      sampling_locations.size(1),
      sampling_locations.size(3),
      sampling_locations.size(4)};
  TORCH_CHECK(
      sampling_locations.size(0) == sizes.batch && sampling_locations.size(2) == sizes.heads,
      "ms_deform_attn: sampling_locations ", sampling_locations.sizes(),
      " does not match value ", value.sizes(), " in N or M");
  TORCH_CHECK(
      attention_weights.dim() == 5 && attention_weights.size(0) == sizes.batch &&
          attention_weights.size(1) == sizes.num_queries && attention_weights.size(2) == sizes.heads &&
          attention_weights.size(3) == sizes.levels && attention_weights.size(4) == sizes.points,
      "ms_deform_attn: attention_weights must be [N, Lq, M, L, P] = [", sizes.batch, ", ", sizes.num_queries,
      ", ", sizes.heads, ", ", sizes.levels, ", ", sizes.points, "], got shape ", attention_weights.sizes());
  TORCH_CHECK(
      spatial_shapes.dim() == 2 && spatial_shapes.size(0) == sizes.levels && spatial_shapes.size(1) == 2,
      "ms_deform_attn: spatial_shapes must be [L, 2] = [", sizes.levels, ", 2], got shape ", spatial_shapes.sizes());
  TORCH_CHECK(
      level_start_index.dim() == 1 && level_start_index.size(0) == sizes.levels,
      "ms_deform_attn: level_start_index must be [L] = [", sizes.levels, "], got shape ", level_start_index.sizes());
  TORCH_CHECK(
      spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
      "ms_deform_attn: spatial_shapes and level_start_index must be int64, got ", spatial_shapes.scalar_type(),
      " and ", level_start_index.scalar_type());
  TORCH_CHECK(
      at::isFloatingType(value.scalar_type()),
      "ms_deform_attn: value must be a floating-point tensor, got ", value.scalar_type());
  TORCH_CHECK(
      sampling_locations.scalar_type() == value.scalar_type() &&
          attention_weights.scalar_type() == value.scalar_type(),
      "ms_deform_attn: value, sampling_locations and attention_weights must share one dtype, got ",
      value.scalar_type(), ", ", sampling_locations.scalar_type(), " and ", attention_weights.scalar_type());
  const at::Device device = value.device();
  TORCH_CHECK(
      sampling_locations.device() == device && attention_weights.device() == device &&
          spatial_shapes.device() == device && level_start_index.device() == device,
      "ms_deform_attn: all inputs must be on one device; value is on ", device, ", sampling_locations on ",
      sampling_locations.device(), ", attention_weights on ", attention_weights.device(), ", spatial_shapes on ",
      spatial_shapes.device(), ", level_start_index on ", level_start_index.device());
  return sizes;
}

// Checks the level table, read on the host, against itself and value: level_start_index must be the
// exclusive cumulative sum of h * w, and the levels must cover value's S exactly. O(L), once per call.
// `shapes` holds (h, w) per level, `starts` one offset per level. The message (the same as the pure-PyTorch
// reference's, ops/reference.py) names both tables' values.
inline void check_level_start_index(const int64_t* shapes, const int64_t* starts, const AttentionSizes& sizes) {
  bool consistent = true;
  int64_t expected_start = 0;
  for (int64_t level = 0; level < sizes.levels; ++level) {
    consistent = consistent && starts[level] == expected_start;
    expected_start += shapes[2 * level] * shapes[2 * level + 1];
  }
  if (consistent && expected_start == sizes.num_values) {
    return;
  }
  std::ostringstream shapes_text;
  std::ostringstream starts_text;
  std::ostringstream expected_text;
  int64_t start = 0;
  for (int64_t level = 0; level < sizes.levels; ++level) {
    const char* separator = level == 0 ? "" : ", ";
    shapes_text << separator << "[" << shapes[2 * level] << ", " << shapes[2 * level + 1] << "]";
    starts_text << separator << starts[level];
    expected_text << separator << start;
    start += shapes[2 * level] * shapes[2 * level + 1];
  }
  TORCH_CHECK_VALUE(
      false, "ms_deform_attn: level_start_index [", starts_text.str(), "] does not match spatial_shapes [",
      shapes_text.str(), "] and value's S = ", sizes.num_values, ": level_start_index must be [",
      expected_text.str(), "] (the exclusive cumulative sum of h * w) and the sum of h * w (", start,
      ") must equal S");
}

inline void check_grad_output(const at::Tensor& grad_output, const at::Tensor& value, const AttentionSizes& sizes) {
  TORCH_CHECK(
      grad_output.dim() == 3 && grad_output.size(0) == sizes.batch && grad_output.size(1) == sizes.num_queries &&
          grad_output.size(2) == sizes.heads * sizes.channels,
      "ms_deform_attn_backward: grad_output must be [N, Lq, M*D] = [", sizes.batch, ", ", sizes.num_queries, ", ",
      sizes.heads * sizes.channels, "], got shape ", grad_output.sizes());
  TORCH_CHECK(
      grad_output.scalar_type() == value.scalar_type() && grad_output.device() == value.device(),
      "ms_deform_attn_backward: grad_output must match value's dtype and device, got ", grad_output.scalar_type(),
      " on ", grad_output.device(), " for ", value.scalar_type(), " on ", value.device());
}

// The gradients, accumulated in the op-math type, returned in the inputs' dtype.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> gradients_in_dtype(
    const at::Tensor& grad_value,
    const at::Tensor& grad_locations,
    const at::Tensor& grad_weights,
    at::ScalarType dtype) {
  return {grad_value.to(dtype), grad_locations.to(dtype), grad_weights.to(dtype)};
}

}  // namespace deformable_detr_ops
