// Per-sample arithmetic of multi-scale deformable attention, shared by the CPU and the CUDA kernels.
//
// A sample is one sampling point of one query, head and level. Its location (x, y) in [0, 1] maps to
// the pixel coordinate (w_im, h_im) = (x * W - 0.5, y * H - 0.5) (pixel centres at integer + 0.5, the
// convention of grid_sample with align_corners=False), computed with exactly grid_sample's float
// operations so that a sample lying on a pixel boundary falls on the same side as in the pure-PyTorch
// reference (which the authors' model was validated with). The value is bilinearly interpolated from the
// four surrounding pixels; a corner outside the image reads as zero, and a sample with h_im < -1, h_im >= H,
// w_im < -1 or w_im >= W has no corner inside and samples zero. (The authors' CUDA kernel also drops
// h_im == -1, where grid_sample keeps a zero value with a one-sided location gradient; we follow grid_sample.)
//
// NaN and infinity propagate as in the reference on the CPU (grid_sample's CPU kernel), forward and backward:
// a corner outside the image contributes zero times its bilinear weight, so a NaN pixel spoils exactly the
// samples that have it as a corner inside the image (even with weight 0); a NaN or infinite pixel coordinate
// makes all four weights, and so the sample, NaN; and a sample entirely outside the image still multiplies
// its zero by the attention weight (NaN for a NaN or infinite weight). The gradients follow from the same
// products, the attention weight applied to each channel's gradient before the sum over channels, as autograd
// does in the reference. (grid_sample's CUDA kernel instead moves a non-finite coordinate outside the image,
// sampling zero; both our kernels give NaN there, on either device.)
//
// Everything a channel loop needs is computed once per sample into `Corners`: the four corner offsets
// (in elements of the flattened value), whether each corner lies inside the image and, per corner, the
// bilinear weight and its derivatives with respect to w_im and h_im, already multiplied by zero for corners
// outside the image. The interpolation below reads the corners through a `pixel(corner)` callable, so that
// each kernel reads zero outside the image the way that suits its loops (a select, or a row of zeros); the
// per-channel loops are branch-free, which lets the CPU compiler vectorise them.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace deformable_detr_ops {

template <typename acc_t>
struct Corners {
  int64_t offset[4];     // element offsets of (top-left, top-right, bottom-left, bottom-right); 0 outside
  bool inside[4];        // whether the corner lies inside the image (an outside corner reads zero)
  acc_t weight[4];       // bilinear weights; 0 outside, but NaN for a sample with non-finite coordinates
  acc_t d_weight_dw[4];  // d weight / d w_im, as weight
  acc_t d_weight_dh[4];  // d weight / d h_im, as weight
};

// What a sample reads, as `bilinear_corners` finds it. `Corners` is filled in every case, so that the
// interpolation below gives the reference's value; a caller may skip a kNothing sample whose attention
// weight (and, backward, incoming gradient) is finite, since all its products are then zero.
enum class SampleReads {
  kPixels,     // at least one corner inside the image
  kNothing,    // finite coordinates, every corner outside: samples zero
  kNotFinite,  // a NaN or infinite pixel coordinate: samples NaN
};

// Whether `a` is neither NaN nor infinite, the same on host and device without math headers.
template <typename acc_t>
C10_HOST_DEVICE inline bool is_finite(acc_t a) {
  return a - a == static_cast<acc_t>(0);
}

// floor() for values >= -1 that converts to an integer, the same on host and device without math headers.
C10_HOST_DEVICE inline int64_t floor_to_int(double coordinate) {
  const int64_t truncated = static_cast<int64_t>(coordinate);
  return coordinate < static_cast<double>(truncated) ? truncated - 1 : truncated;
}

C10_HOST_DEVICE inline int64_t floor_to_int(float coordinate) {
  const int64_t truncated = static_cast<int64_t>(coordinate);
  return coordinate < static_cast<float>(truncated) ? truncated - 1 : truncated;
}

// a * b + c with one rounding.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t fused_multiply_add(acc_t a, acc_t b, acc_t c) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(acc_t) == sizeof(float)) {
    return __fmaf_rn(a, b, c);
  } else {
    return __fma_rn(a, b, c);
  }
#else
  return std::fma(a, b, c);
#endif
}

// a + b with its own rounding (never contracted into a multiply-add by nvcc).
template <typename acc_t>
C10_HOST_DEVICE inline acc_t add_rounded(acc_t a, acc_t b) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(acc_t) == sizeof(float)) {
    return __fadd_rn(a, b);
  } else {
    return __dadd_rn(a, b);
  }
#else
  return a + b;
#endif
}

// grid_sample's pixel coordinate of a location in [0, 1] on a side of `size` pixels, with the roundings of
// the reference: the grid value g = 2 * location - 1 (two PyTorch operations), then grid_sample's
// unnormalisation (g + 1) * (size / 2) - 0.5, whose multiply-subtract ATen's vectorised CPU kernel fuses.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t pixel_coordinate(acc_t location, int64_t size) {
  const acc_t grid = add_rounded(location * static_cast<acc_t>(2), static_cast<acc_t>(-1));  // 2x is exact
  const acc_t half_size = static_cast<acc_t>(size) / static_cast<acc_t>(2);
  return fused_multiply_add(add_rounded(grid, static_cast<acc_t>(1)), half_size, static_cast<acc_t>(-0.5));
}

// Fills `corners` for a sample at (x, y) on a level of `height` x `width` pixels whose pixel (h, w) starts
// at element (h * width + w) * pixel_stride.
template <typename acc_t>
C10_HOST_DEVICE inline SampleReads bilinear_corners(
    acc_t x, acc_t y, int64_t height, int64_t width, int64_t pixel_stride, Corners<acc_t>& corners) {
  const acc_t h_im = pixel_coordinate(y, height);
  const acc_t w_im = pixel_coordinate(x, width);
  // NaN fails every comparison and an infinity one of them, so only finite coordinates pass.
  if (!(h_im >= static_cast<acc_t>(-1) && w_im >= static_cast<acc_t>(-1) && h_im < static_cast<acc_t>(height) &&
        w_im < static_cast<acc_t>(width))) {
    // Every corner outside. For finite coordinates every weight is finite and the sample is zero. Otherwise,
    // as grid_sample on the CPU, every weight is NaN, and d weight / d w_im, which depends on h_im only (and
    // vice versa), is NaN only where h_im is not finite: h_im - h_im is 0 or NaN.
    const acc_t h_poison = h_im - h_im;
    const acc_t w_poison = w_im - w_im;
    for (int corner = 0; corner < 4; ++corner) {
      corners.offset[corner] = 0;
      corners.inside[corner] = false;
      corners.weight[corner] = h_poison + w_poison;
      corners.d_weight_dw[corner] = h_poison;
      corners.d_weight_dh[corner] = w_poison;
    }
    return is_finite(h_im) && is_finite(w_im) ? SampleReads::kNothing : SampleReads::kNotFinite;
  }
  const int64_t h_low = floor_to_int(h_im);
  const int64_t w_low = floor_to_int(w_im);
  const int64_t h_high = h_low + 1;
  const int64_t w_high = w_low + 1;
  const acc_t lh = h_im - static_cast<acc_t>(h_low);  // distance from the top row
  const acc_t lw = w_im - static_cast<acc_t>(w_low);  // distance from the left column
  const acc_t hh = static_cast<acc_t>(1) - lh;
  const acc_t hw = static_cast<acc_t>(1) - lw;

  const bool top = h_low >= 0;
  const bool bottom = h_high <= height - 1;
  const bool left = w_low >= 0;
  const bool right = w_high <= width - 1;
  const bool inside[4] = {top && left, top && right, bottom && left, bottom && right};
  const int64_t rows[4] = {h_low, h_low, h_high, h_high};
  const int64_t cols[4] = {w_low, w_high, w_low, w_high};
  const acc_t weight[4] = {hh * hw, hh * lw, lh * hw, lh * lw};
  const acc_t d_dw[4] = {-hh, hh, -lh, lh};
  const acc_t d_dh[4] = {-hw, -lw, hw, lw};
  for (int corner = 0; corner < 4; ++corner) {
    // A corner outside points at offset 0 (always readable) with weight 0: its share of the value gradient
    // is then zero wherever the incoming gradient is finite (see scatter_corners).
    const acc_t keep = inside[corner] ? static_cast<acc_t>(1) : static_cast<acc_t>(0);
    corners.offset[corner] = inside[corner] ? (rows[corner] * width + cols[corner]) * pixel_stride : 0;
    corners.inside[corner] = inside[corner];
    corners.weight[corner] = keep * weight[corner];
    corners.d_weight_dw[corner] = keep * d_dw[corner];
    corners.d_weight_dh[corner] = keep * d_dh[corner];
  }
  return SampleReads::kPixels;
}

// The interpolated value of one channel; `pixel(corner)` is the corner's value in that channel, in acc_t,
// zero for a corner outside the image (read zero, never multiplied by zero: that would turn a NaN or an
// infinity in memory the corner does not cover into NaN).
template <typename acc_t, typename Pixel>
C10_HOST_DEVICE inline acc_t interpolate(const Corners<acc_t>& corners, const Pixel& pixel) {
  acc_t sampled = 0;
  for (int corner = 0; corner < 4; ++corner) {
    sampled += corners.weight[corner] * pixel(corner);
  }
  return sampled;
}

// The interpolated value of one channel and its derivatives with respect to w_im and h_im.
template <typename acc_t, typename Pixel>
C10_HOST_DEVICE inline acc_t interpolate_with_grad(
    const Corners<acc_t>& corners, const Pixel& pixel, acc_t& d_dw, acc_t& d_dh) {
  acc_t sampled = 0;
  d_dw = 0;
  d_dh = 0;
  for (int corner = 0; corner < 4; ++corner) {
    const acc_t value = pixel(corner);
    sampled += corners.weight[corner] * value;
    d_dw += corners.d_weight_dw[corner] * value;
    d_dh += corners.d_weight_dh[corner] * value;
  }
  return sampled;
}

// Hands each corner's share of a channel's gradient, weight(corner) * grad_sampled, to `add(corner, amount)`,
// which adds it to the value gradient at a corner inside the image and drops it for a corner outside. (That
// share is zero for finite coordinates and a finite grad_sampled, so adding it at offset 0 is harmless then.)
template <typename acc_t, typename Add>
C10_HOST_DEVICE inline void scatter_corners(const Corners<acc_t>& corners, acc_t grad_sampled, const Add& add) {
  for (int corner = 0; corner < 4; ++corner) {
    add(corner, corners.weight[corner] * grad_sampled);
  }
}

}  // namespace deformable_detr_ops
