// CUDA kernels: one thread per (batch, query, head, channel) element; the per-sample arithmetic is the
// one the CPU kernel runs (ms_deform_attn_math.h). Accumulation happens in the op-math type (float for
// half / bfloat16); the gradients are summed with atomic adds into op-math buffers and cast at the end.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../checks.h"
#include "../ms_deform_attn_math.h"

namespace deformable_detr_ops {
namespace {

constexpr int kThreadsPerBlock = 256;  // a multiple of the warp size: no block ends mid-warp
constexpr int kWarpSize = 32;
constexpr unsigned kFullWarp = 0xffffffffu;

int64_t blocks_for(int64_t elements) {
  return (elements + kThreadsPerBlock - 1) / kThreadsPerBlock;
}

// The level table is checked here, on the device, not on the host as for CPU tensors: reading a CUDA tensor
// on the host waits for the stream (a sync per call, in every attention layer, forward and backward) and
// cannot happen inside CUDA-graph capture. Each thread walks the levels anyway, so it recomputes the
// exclusive cumulative sum of h * w and stops the kernel with a device-side assert (a CUDA error at the
// next synchronisation) when level_start_index disagrees or the levels do not cover S, before any read
// outside value. The host check on CPU tensors (checks.h) tests the same and names the values.
__device__ inline void assert_level_table(bool consistent) {
  CUDA_KERNEL_ASSERT_MSG(
      consistent,
      "ms_deform_attn: level_start_index must be the exclusive cumulative sum of h * w over spatial_shapes, "
      "and the sum of h * w must equal value's S (the op on CPU tensors names the values)");
}

// Checks level `level`, which must start at `start`, and returns where the next one starts.
__device__ inline int64_t checked_next_start(
    int64_t level, int64_t start, int64_t height, int64_t width, const int64_t* level_start_index, int64_t num_values) {
  assert_level_table(
      level_start_index[level] == start && height > 0 && width > 0 && start + height * width <= num_values);
  return start + height * width;
}

template <typename scalar_t, typename acc_t>
__global__ void ms_deform_attn_forward_kernel(
    int64_t total,
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ spatial_shapes,
    const int64_t* __restrict__ level_start_index,
    const scalar_t* __restrict__ sampling_locations,
    const scalar_t* __restrict__ attention_weights,
    AttentionSizes sizes,
    scalar_t* __restrict__ output) {
  const int64_t element = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (element >= total) {
    return;
  }
  // element = ((batch * Lq + query) * M + head) * D + channel
  const int64_t channel = element % sizes.channels;
  const int64_t query_head = element / sizes.channels;  // (batch * Lq + query) * M + head
  const int64_t head = query_head % sizes.heads;
  const int64_t batch = query_head / (sizes.heads * sizes.num_queries);
  const int64_t pixel_stride = sizes.heads * sizes.channels;
  Corners<acc_t> corners;
  acc_t accumulated = 0;
  int64_t next_start = 0;
  for (int64_t level = 0; level < sizes.levels; ++level) {
    const int64_t height = spatial_shapes[2 * level];
    const int64_t width = spatial_shapes[2 * level + 1];
    const int64_t start = next_start;
    next_start = checked_next_start(level, start, height, width, level_start_index, sizes.num_values);
    const scalar_t* level_value = value + ((batch * sizes.num_values + start) * sizes.heads + head) * sizes.channels;
    for (int64_t point = 0; point < sizes.points; ++point) {
      const int64_t sample = (query_head * sizes.levels + level) * sizes.points + point;
      const acc_t x = static_cast<acc_t>(sampling_locations[2 * sample]);
      const acc_t y = static_cast<acc_t>(sampling_locations[2 * sample + 1]);
      const SampleReads reads = bilinear_corners(x, y, height, width, pixel_stride, corners);
      const acc_t weight = static_cast<acc_t>(attention_weights[sample]);
      if (reads != SampleReads::kNothing || !is_finite(weight)) {  // else it adds weight * 0
        // A corner outside the image reads zero (a select: no load, no product with what lies at offset 0).
        const auto pixel = [&](int corner) {
          return corners.inside[corner] ? static_cast<acc_t>(level_value[corners.offset[corner] + channel])
                                        : static_cast<acc_t>(0);
        };
        accumulated += weight * interpolate(corners, pixel);
      }
    }
  }
  assert_level_table(next_start == sizes.num_values);
  output[element] = static_cast<scalar_t>(accumulated);
}

template <typename scalar_t, typename acc_t>
__global__ void ms_deform_attn_backward_kernel(
    int64_t total,
    const scalar_t* __restrict__ grad_output,
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ spatial_shapes,
    const int64_t* __restrict__ level_start_index,
    const scalar_t* __restrict__ sampling_locations,
    const scalar_t* __restrict__ attention_weights,
    AttentionSizes sizes,
    acc_t* __restrict__ grad_value,
    acc_t* __restrict__ grad_sampling_locations,
    acc_t* __restrict__ grad_attention_weights) {
  const int64_t element = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (element >= total) {
    return;
  }
  const int64_t channel = element % sizes.channels;
  const int64_t query_head = element / sizes.channels;
  const int64_t head = query_head % sizes.heads;
  const int64_t batch = query_head / (sizes.heads * sizes.num_queries);
  const int64_t pixel_stride = sizes.heads * sizes.channels;
  // With D a multiple of 32, each warp covers 32 channels of one (batch, query, head), and total is a
  // multiple of 32, so no lane of a warp returned above.
  const bool warp_per_sample = sizes.channels % kWarpSize == 0;
  const acc_t grad = static_cast<acc_t>(grad_output[element]);
  // Whether the gradients this thread adds to (its warp's in warp_per_sample mode, so that all lanes take
  // the same branches) are finite: a sample that reads nothing may then be skipped.
  const bool grad_finite = warp_per_sample ? __all_sync(kFullWarp, is_finite(grad)) : is_finite(grad);
  Corners<acc_t> corners;
  int64_t next_start = 0;
  for (int64_t level = 0; level < sizes.levels; ++level) {
    const int64_t height = spatial_shapes[2 * level];
    const int64_t width = spatial_shapes[2 * level + 1];
    const int64_t start = next_start;
    next_start = checked_next_start(level, start, height, width, level_start_index, sizes.num_values);
    const int64_t level_offset = ((batch * sizes.num_values + start) * sizes.heads + head) * sizes.channels;
    for (int64_t point = 0; point < sizes.points; ++point) {
      const int64_t sample = (query_head * sizes.levels + level) * sizes.points + point;
      const acc_t x = static_cast<acc_t>(sampling_locations[2 * sample]);
      const acc_t y = static_cast<acc_t>(sampling_locations[2 * sample + 1]);
      const SampleReads reads = bilinear_corners(x, y, height, width, pixel_stride, corners);
      const acc_t weight = static_cast<acc_t>(attention_weights[sample]);
      if (reads == SampleReads::kNothing && is_finite(weight) && grad_finite) {
        continue;  // every product below is zero, and the gradient buffers start at zero
      }
      const auto pixel = [&](int corner) {
        return corners.inside[corner] ? static_cast<acc_t>(value[level_offset + corners.offset[corner] + channel])
                                      : static_cast<acc_t>(0);
      };
      acc_t d_dw;
      acc_t d_dh;
      const acc_t sampled = interpolate_with_grad(corners, pixel, d_dw, d_dh);
      const acc_t weighted_grad = weight * grad;  // as the reference: the weight before the sum over channels
      // Many queries sample the same pixel, so the writes race: atomic adds, at the corners inside the image.
      const auto add = [&](int corner, acc_t amount) {
        if (corners.inside[corner]) {
          gpuAtomicAdd(grad_value + level_offset + corners.offset[corner] + channel, amount);
        }
      };
      scatter_corners(corners, weighted_grad, add);
      // The sample's gradients are sums over its channels, one share per thread.
      acc_t grad_weight = grad * sampled;
      acc_t grad_x = weighted_grad * d_dw * static_cast<acc_t>(width);
      acc_t grad_y = weighted_grad * d_dh * static_cast<acc_t>(height);
      if (warp_per_sample) {
        // All 32 lanes hold channels of this sample (and took the same branches): sum them in registers
        // and let lane 0 add once, instead of 32 contended atomic adds per value.
        for (int lane_offset = kWarpSize / 2; lane_offset > 0; lane_offset /= 2) {
          grad_weight += __shfl_down_sync(kFullWarp, grad_weight, lane_offset);
          grad_x += __shfl_down_sync(kFullWarp, grad_x, lane_offset);
          grad_y += __shfl_down_sync(kFullWarp, grad_y, lane_offset);
        }
        if ((threadIdx.x % kWarpSize) != 0) {
          continue;
        }
      }
      gpuAtomicAdd(grad_attention_weights + sample, grad_weight);
      gpuAtomicAdd(grad_sampling_locations + 2 * sample, grad_x);
      gpuAtomicAdd(grad_sampling_locations + 2 * sample + 1, grad_y);
    }
  }
  assert_level_table(next_start == sizes.num_values);
}

at::Tensor ms_deform_attn_cuda(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  // The level table is checked in the kernels (assert_level_table), not read here: see there why.
  const AttentionSizes sizes =
      check_attention_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const c10::cuda::CUDAGuard device_guard(value.device());
  const at::Tensor value_c = value.contiguous();
  const at::Tensor shapes_c = spatial_shapes.contiguous();
  const at::Tensor starts_c = level_start_index.contiguous();
  const at::Tensor locations_c = sampling_locations.contiguous();
  const at::Tensor weights_c = attention_weights.contiguous();
  at::Tensor output = at::empty({sizes.batch, sizes.num_queries, sizes.heads * sizes.channels}, value.options());
  const int64_t total = output.numel();
  if (total == 0) {
    return output;
  }
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    ms_deform_attn_forward_kernel<scalar_t, acc_t><<<blocks_for(total), kThreadsPerBlock, 0, stream>>>(
        total,
        value_c.data_ptr<scalar_t>(),
        shapes_c.data_ptr<int64_t>(),
        starts_c.data_ptr<int64_t>(),
        locations_c.data_ptr<scalar_t>(),
        weights_c.data_ptr<scalar_t>(),
        sizes,
        output.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& grad_output,
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const AttentionSizes sizes =
      check_attention_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_grad_output(grad_output, value, sizes);
  const c10::cuda::CUDAGuard device_guard(value.device());
  const at::Tensor grad_output_c = grad_output.contiguous();
  const at::Tensor value_c = value.contiguous();
  const at::Tensor shapes_c = spatial_shapes.contiguous();
  const at::Tensor starts_c = level_start_index.contiguous();
  const at::Tensor locations_c = sampling_locations.contiguous();
  const at::Tensor weights_c = attention_weights.contiguous();
  const at::ScalarType acc_type = at::toOpMathType(value.scalar_type());
  at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(acc_type));
  at::Tensor grad_locations = at::zeros(sampling_locations.sizes(), value.options().dtype(acc_type));
  at::Tensor grad_weights = at::zeros(attention_weights.sizes(), value.options().dtype(acc_type));
  const int64_t total = grad_output.numel();
  if (total > 0) {
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      ms_deform_attn_backward_kernel<scalar_t, acc_t><<<blocks_for(total), kThreadsPerBlock, 0, stream>>>(
          total,
          grad_output_c.data_ptr<scalar_t>(),
          value_c.data_ptr<scalar_t>(),
          shapes_c.data_ptr<int64_t>(),
          starts_c.data_ptr<int64_t>(),
          locations_c.data_ptr<scalar_t>(),
          weights_c.data_ptr<scalar_t>(),
          sizes,
          grad_value.data_ptr<acc_t>(),
          grad_locations.data_ptr<acc_t>(),
          grad_weights.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return gradients_in_dtype(grad_value, grad_locations, grad_weights, value.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(deformable_detr_ops, CUDA, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_cuda);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cuda);
}

}  // namespace deformable_detr_ops
