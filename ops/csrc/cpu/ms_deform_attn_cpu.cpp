// CPU kernels. Forward: parallel over (batch, query) pairs, each writing its own output rows.
// Backward: parallel over (batch, head) pairs, because the value gradient of one (batch, head) is
// written by all its queries and by nothing else, so threads never write the same element.
// The channel loops carry `omp simd` (built with -fopenmp-simd) so that they vectorise; they are _Pragma
// operators because the kernels sit inside the AT_DISPATCH macro.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "../checks.h"
#include "../ms_deform_attn_math.h"

namespace deformable_detr_ops {
namespace {

// Reads the level table and checks it: every level lies inside value, and level_start_index agrees with
// spatial_shapes (check_level_start_index). Cheap here: the tables are in host memory.
std::vector<int64_t> read_levels(
    const at::Tensor& spatial_shapes, const at::Tensor& level_start_index, const AttentionSizes& sizes) {
  const at::Tensor shapes = spatial_shapes.contiguous();
  const at::Tensor starts = level_start_index.contiguous();
  const int64_t* shape_data = shapes.data_ptr<int64_t>();
  const int64_t* start_data = starts.data_ptr<int64_t>();
  std::vector<int64_t> levels(3 * sizes.levels);  // (height, width, start) per level
  for (int64_t level = 0; level < sizes.levels; ++level) {
    const int64_t height = shape_data[2 * level];
    const int64_t width = shape_data[2 * level + 1];
    const int64_t start = start_data[level];
    TORCH_CHECK(
        height > 0 && width > 0 && start >= 0 && start + height * width <= sizes.num_values,
        "ms_deform_attn: level ", level, " of size ", height, "x", width, " starting at ", start,
        " does not fit in value's S = ", sizes.num_values, " (check spatial_shapes and level_start_index)");
    levels[3 * level] = height;
    levels[3 * level + 1] = width;
    levels[3 * level + 2] = start;
  }
  check_level_start_index(shape_data, start_data, sizes);
  return levels;
}

// The rows of D channels that a sample's corners read: the pixel's inside the image, `zeros` outside. The
// backward reads through these rows because its channel loop runs markedly slower with a select between each
// pixel and zero; the forward's simpler loop takes the select at no measurable cost.
template <typename scalar_t, typename acc_t>
void corner_rows(const scalar_t* level_value, const scalar_t* zeros, const Corners<acc_t>& corners,
                 const scalar_t* rows[4]) {
  for (int corner = 0; corner < 4; ++corner) {
    rows[corner] = corners.inside[corner] ? level_value + corners.offset[corner] : zeros;
  }
}

at::Tensor ms_deform_attn_cpu(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const AttentionSizes sizes =
      check_attention_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const std::vector<int64_t> levels = read_levels(spatial_shapes, level_start_index, sizes);
  const at::Tensor value_c = value.contiguous();
  const at::Tensor locations_c = sampling_locations.contiguous();
  const at::Tensor weights_c = attention_weights.contiguous();
  at::Tensor output = at::empty({sizes.batch, sizes.num_queries, sizes.heads * sizes.channels}, value.options());
  if (output.numel() == 0) {
    return output;
  }
  const int64_t heads = sizes.heads;
  const int64_t channels = sizes.channels;
  const int64_t pixel_stride = heads * channels;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* value_data = value_c.data_ptr<scalar_t>();
    const scalar_t* location_data = locations_c.data_ptr<scalar_t>();
    const scalar_t* weight_data = weights_c.data_ptr<scalar_t>();
    scalar_t* output_data = output.data_ptr<scalar_t>();
    // ~16 queries per task keeps the scheduling cost small against L*P*D work per query and head.
    at::parallel_for(0, sizes.batch * sizes.num_queries, 16, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> accumulated(channels);
      Corners<acc_t> corners;
      for (int64_t batch_query = begin; batch_query < end; ++batch_query) {
        const int64_t batch = batch_query / sizes.num_queries;
        for (int64_t head = 0; head < heads; ++head) {
          std::fill(accumulated.begin(), accumulated.end(), acc_t(0));
          const int64_t sample_base = (batch_query * heads + head) * sizes.levels * sizes.points;
          for (int64_t level = 0; level < sizes.levels; ++level) {
            const int64_t height = levels[3 * level];
            const int64_t width = levels[3 * level + 1];
            const scalar_t* level_value =
                value_data + ((batch * sizes.num_values + levels[3 * level + 2]) * heads + head) * channels;
            for (int64_t point = 0; point < sizes.points; ++point) {
              const int64_t sample = sample_base + level * sizes.points + point;
              const acc_t x = static_cast<acc_t>(location_data[2 * sample]);
              const acc_t y = static_cast<acc_t>(location_data[2 * sample + 1]);
              const SampleReads reads = bilinear_corners(x, y, height, width, pixel_stride, corners);
              const acc_t weight = static_cast<acc_t>(weight_data[sample]);
              if (reads == SampleReads::kNothing && is_finite(weight)) {
                continue;  // adds weight * 0
              }
              _Pragma("omp simd")
              for (int64_t channel = 0; channel < channels; ++channel) {
                const auto pixel = [&](int corner) {
                  const acc_t read = static_cast<acc_t>(level_value[corners.offset[corner] + channel]);
                  return corners.inside[corner] ? read : acc_t(0);
                };
                accumulated[channel] += weight * interpolate(corners, pixel);
              }
            }
          }
          scalar_t* output_row = output_data + (batch_query * heads + head) * channels;
          for (int64_t channel = 0; channel < channels; ++channel) {
            output_row[channel] = static_cast<scalar_t>(accumulated[channel]);
          }
        }
      }
    });
  });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output,
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const AttentionSizes sizes =
      check_attention_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_grad_output(grad_output, value, sizes);
  const std::vector<int64_t> levels = read_levels(spatial_shapes, level_start_index, sizes);
  const at::Tensor grad_output_c = grad_output.contiguous();
  const at::Tensor value_c = value.contiguous();
  const at::Tensor locations_c = sampling_locations.contiguous();
  const at::Tensor weights_c = attention_weights.contiguous();
  // Gradients accumulate in the op-math type (float for half / bfloat16) and are cast back at the end.
  const at::ScalarType acc_type = at::toOpMathType(value.scalar_type());
  at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(acc_type));
  at::Tensor grad_locations = at::empty(sampling_locations.sizes(), value.options().dtype(acc_type));
  at::Tensor grad_weights = at::empty(attention_weights.sizes(), value.options().dtype(acc_type));
  const int64_t heads = sizes.heads;
  const int64_t channels = sizes.channels;
  const int64_t pixel_stride = heads * channels;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* grad_output_data = grad_output_c.data_ptr<scalar_t>();
    const scalar_t* value_data = value_c.data_ptr<scalar_t>();
    const scalar_t* location_data = locations_c.data_ptr<scalar_t>();
    const scalar_t* weight_data = weights_c.data_ptr<scalar_t>();
    acc_t* grad_value_data = grad_value.data_ptr<acc_t>();
    acc_t* grad_location_data = grad_locations.data_ptr<acc_t>();
    acc_t* grad_weight_data = grad_weights.data_ptr<acc_t>();
    at::parallel_for(0, sizes.batch * heads, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> grad_sampled(channels);
      const std::vector<scalar_t> zeros(channels, scalar_t(0));  // what corners outside the image read
      Corners<acc_t> corners;
      for (int64_t batch_head = begin; batch_head < end; ++batch_head) {
        const int64_t batch = batch_head / heads;
        const int64_t head = batch_head % heads;
        for (int64_t query = 0; query < sizes.num_queries; ++query) {
          const int64_t batch_query = batch * sizes.num_queries + query;
          const scalar_t* grad_output_row = grad_output_data + (batch_query * heads + head) * channels;
          // Sum of |gradient| over the row: NaN or infinite when a gradient is, and a bound on each of them, so
          // that weight * grad_abs_sum finite means every weight * gradient of a sample is finite.
          acc_t grad_abs_sum = 0;
          _Pragma("omp simd reduction(+ : grad_abs_sum)")
          for (int64_t channel = 0; channel < channels; ++channel) {
            grad_sampled[channel] = static_cast<acc_t>(grad_output_row[channel]);
            grad_abs_sum += std::abs(grad_sampled[channel]);
          }
          const int64_t sample_base = (batch_query * heads + head) * sizes.levels * sizes.points;
          for (int64_t level = 0; level < sizes.levels; ++level) {
            const int64_t height = levels[3 * level];
            const int64_t width = levels[3 * level + 1];
            const int64_t level_offset = ((batch * sizes.num_values + levels[3 * level + 2]) * heads + head) * channels;
            const scalar_t* level_value = value_data + level_offset;
            acc_t* level_grad_value = grad_value_data + level_offset;
            for (int64_t point = 0; point < sizes.points; ++point) {
              const int64_t sample = sample_base + level * sizes.points + point;
              const acc_t x = static_cast<acc_t>(location_data[2 * sample]);
              const acc_t y = static_cast<acc_t>(location_data[2 * sample + 1]);
              const SampleReads reads = bilinear_corners(x, y, height, width, pixel_stride, corners);
              const acc_t weight = static_cast<acc_t>(weight_data[sample]);
              const bool products_finite = is_finite(weight * grad_abs_sum);
              if (reads == SampleReads::kNothing && products_finite) {
                // Every product below is zero.
                grad_location_data[2 * sample] = 0;
                grad_location_data[2 * sample + 1] = 0;
                grad_weight_data[sample] = 0;
                continue;
              }
              acc_t grad_weight = 0;
              acc_t grad_w_im = 0;
              acc_t grad_h_im = 0;
              const scalar_t* rows[4];
              corner_rows(level_value, zeros.data(), corners, rows);
              // Reads first, then writes: in one loop every store to grad_value could alias the reads.
              _Pragma("omp simd reduction(+ : grad_weight, grad_w_im, grad_h_im)")
              for (int64_t channel = 0; channel < channels; ++channel) {
                const auto pixel = [&](int corner) { return static_cast<acc_t>(rows[corner][channel]); };
                acc_t d_dw;
                acc_t d_dh;
                const acc_t sampled = interpolate_with_grad(corners, pixel, d_dw, d_dh);
                const acc_t grad = grad_sampled[channel];
                grad_weight += grad * sampled;
                // The weight multiplies each channel's gradient before the sum, as in the reference, so that an
                // infinite weight gives the reference's NaN (inf - inf) where the channels' signs differ.
                const acc_t weighted_grad = weight * grad;
                grad_w_im += weighted_grad * d_dw;
                grad_h_im += weighted_grad * d_dh;
              }
              // Channels never collide: corner offsets are multiples of M * D, so distinct channels write
              // distinct elements (corners outside the image add at offset 0, within one channel). They add
              // zero (weight 0 times a finite amount) unless the sample's weights are NaN or one of its
              // weight * gradient products is not finite: then a select drops them.
              if (products_finite && reads != SampleReads::kNotFinite) {
                _Pragma("omp simd")
                for (int64_t channel = 0; channel < channels; ++channel) {
                  const auto add = [&](int corner, acc_t amount) {
                    level_grad_value[corners.offset[corner] + channel] += amount;
                  };
                  scatter_corners(corners, weight * grad_sampled[channel], add);
                }
              } else {
                for (int64_t channel = 0; channel < channels; ++channel) {
                  const auto add = [&](int corner, acc_t amount) {
                    level_grad_value[corners.offset[corner] + channel] += corners.inside[corner] ? amount : acc_t(0);
                  };
                  scatter_corners(corners, weight * grad_sampled[channel], add);
                }
              }
              grad_weight_data[sample] = grad_weight;
              // w_im = x * W - 0.5 and h_im = y * H - 0.5
              grad_location_data[2 * sample] = grad_w_im * static_cast<acc_t>(width);
              grad_location_data[2 * sample + 1] = grad_h_im * static_cast<acc_t>(height);
            }
          }
        }
      }
    });
  });
  return gradients_in_dtype(grad_value, grad_locations, grad_weights, value.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(deformable_detr_ops, CPU, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_cpu);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cpu);
}

}  // namespace deformable_detr_ops
