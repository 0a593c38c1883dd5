// The CPU decode step's kernels, float32, as XLA FFI custom calls: a matmul for a few rows over a
// pre-packed weight, the packing itself, and one query's attention over the live part of a KV cache.
//
// Built and loaded by cpu_decode.py (the host's C++ compiler, -march=native, cached per machine).
// A decode step multiplies M = batch rows (1-16) by every weight once per token, so it is bound by
// reading the weights. XLA:CPU's GEMM packs the weight on every call above one row, which costs
// about twice the weight read before any arithmetic (benchmarks/RESULTS.md): at batch 8 the step ran
// at 2.4x the bandwidth floor. Here the weight is packed once per `generate` call instead, into
// column tiles laid out one after another:
//
//   out[m, n] = sum_k x[m, k] * w[k, n],   packed[p, k, j] = w[k, p * 48 + j]   (zero past N)
//
// so a tile's K x 48 block is one contiguous run of memory. Each thread takes whole tiles; for each,
// kRows rows of x at a time accumulate 3 x kRows vectors of 16 floats in registers over k (one tile
// row: 3 vector loads, kRows broadcasts, 3 * kRows FMAs), reading the tile from memory once and
// from the L2 cache for the next rows of x. Sums run over k in order.
//
// XLA's attention over the cache reads all of the cache arrays (the slots not written yet are
// masked); this one reads the slots a row can see, start[b]..slot, and nothing else.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kLanes = 16;                    // floats per vector (one AVX-512 register)
constexpr int kVectors = 3;                   // vectors per tile row
constexpr int kTileCols = kVectors * kLanes;  // 48 output columns per tile (cpu_decode.TILE_COLS)
constexpr int kRows = 8;                      // rows of x per pass: 3 x 8 accumulators in registers
constexpr int kPrefetchRows = 8;              // tile rows read ahead of the FMAs

// A vector of 16 floats with no alignment requirement: GCC and clang lower it to the host's
// widest registers (one zmm with AVX-512, two ymm with AVX2, four NEON q registers).
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float)), aligned(alignof(float))));

inline Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void Store(float* p, Vec v) { std::memcpy(p, &v, sizeof(v)); }

// Runs body(i) for i in [0, n) on the calling thread and XLA's intra-op pool, `grain` items per
// claim. Threads claim items from `next` until none are left; the caller returns once `done` counts
// every item. A task that starts late finds nothing to claim; the shared_ptr keeps the state alive
// until it has looked.
template <typename Body>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, int64_t grain, const Body& body) {
  struct State {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto state = std::make_shared<State>();
  auto run = [state, n, grain, &body] {
    for (int64_t i0; (i0 = state->next.fetch_add(grain, std::memory_order_relaxed)) < n;) {
      const int64_t i1 = std::min(n, i0 + grain);
      for (int64_t i = i0; i < i1; ++i) body(i);
      state->done.fetch_add(i1 - i0, std::memory_order_release);
    }
  };
  const int64_t claims = (n + grain - 1) / grain;
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), claims) - 1;
  // A helper holds `body` by reference: it only calls it after claiming an item, which happens
  // before `done` reaches n, that is, before this function returns.
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([run] { run(); });
  run();
  while (state->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

// ---- matmul over packed tiles --------------------------------------------------------------

// out[0:R, tile's columns] = x[0:R, :] @ tile, for one packed tile [K, 48]. x rows have stride K,
// out rows stride out_stride; only the first `cols` (<= 48) columns are written.
template <int R>
void TileRows(const float* x, int64_t K, const float* tile, float* out, int64_t out_stride, int64_t cols) {
  Vec acc[R][kVectors];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 3
    for (int j = 0; j < kVectors; ++j) acc[r][j] = Vec{};
  for (int64_t k = 0; k < K; ++k) {
    const float* row = tile + k * kTileCols;
    __builtin_prefetch(row + kPrefetchRows * kTileCols);
    __builtin_prefetch(row + kPrefetchRows * kTileCols + kLanes);
    __builtin_prefetch(row + kPrefetchRows * kTileCols + 2 * kLanes);
    const Vec w0 = Load(row), w1 = Load(row + kLanes), w2 = Load(row + 2 * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float xr = x[r * K + k];
      acc[r][0] += xr * w0;
      acc[r][1] += xr * w1;
      acc[r][2] += xr * w2;
    }
  }
  for (int r = 0; r < R; ++r) {
    if (cols == kTileCols) {
#pragma GCC unroll 3
      for (int j = 0; j < kVectors; ++j) Store(out + r * out_stride + j * kLanes, acc[r][j]);
    } else {  // the last tile of an N that is not a multiple of 48
      float full[kTileCols];
      for (int j = 0; j < kVectors; ++j) Store(full + j * kLanes, acc[r][j]);
      std::memcpy(out + r * out_stride, full, cols * sizeof(float));
    }
  }
}

void Rows(int rows, const float* x, int64_t K, const float* tile, float* out, int64_t N, int64_t cols) {
  switch (rows) {
    case 1: return TileRows<1>(x, K, tile, out, N, cols);
    case 2: return TileRows<2>(x, K, tile, out, N, cols);
    case 3: return TileRows<3>(x, K, tile, out, N, cols);
    case 4: return TileRows<4>(x, K, tile, out, N, cols);
    case 5: return TileRows<5>(x, K, tile, out, N, cols);
    case 6: return TileRows<6>(x, K, tile, out, N, cols);
    case 7: return TileRows<7>(x, K, tile, out, N, cols);
    default: return TileRows<kRows>(x, K, tile, out, N, cols);
  }
}

using Matrix = ffi::Buffer<ffi::F32, 2>;
using Stack = ffi::Buffer<ffi::F32, 3>;
using Scalar = ffi::Buffer<ffi::S32, 0>;
using Starts = ffi::Buffer<ffi::S32, 1>;
using Cache = ffi::Buffer<ffi::F32, 4>;

// x [M, K], packed [ceil(N / 48), K, 48] -> out [M, N].
ffi::Error PackedMatmul(ffi::ThreadPool pool, Matrix x, Stack packed, ffi::ResultBuffer<ffi::F32, 2> out) {
  const auto xd = x.dimensions(), pd = packed.dimensions(), od = out->dimensions();
  const int64_t M = xd[0], K = xd[1], N = od[1], tiles = pd[0];
  if (pd[1] != K || pd[2] != kTileCols || od[0] != M || tiles != (N + kTileCols - 1) / kTileCols)
    return ffi::Error::InvalidArgument("gpt_flax_packed_matmul: operand shapes do not match");
  const float* xs = x.typed_data();
  const float* ws = packed.typed_data();
  float* os = out->typed_data();
  ParallelFor(pool, tiles, /*grain=*/2, [&](int64_t t) {
    const int64_t n = t * kTileCols, cols = std::min<int64_t>(kTileCols, N - n);
    for (int64_t m = 0; m < M; m += kRows)
      Rows(int(std::min<int64_t>(kRows, M - m)), xs + m * K, K, ws + t * K * kTileCols, os + m * N + n, N, cols);
  });
  return ffi::Error::Success();
}

// Layer `layer` of w [L, K, N] (or, transposed, [L, N, K]) -> packed [ceil(N / 48), K, 48].
ffi::Error Pack(ffi::ThreadPool pool, Stack w, ffi::ResultBuffer<ffi::F32, 3> packed, int64_t layer,
                bool transposed) {
  const auto wd = w.dimensions(), pd = packed->dimensions();
  const int64_t K = transposed ? wd[2] : wd[1], N = transposed ? wd[1] : wd[2], tiles = pd[0];
  if (layer < 0 || layer >= wd[0] || pd[1] != K || pd[2] != kTileCols || tiles != (N + kTileCols - 1) / kTileCols)
    return ffi::Error::InvalidArgument("gpt_flax_pack: operand shapes do not match");
  const float* src = w.typed_data() + layer * K * N;
  float* dst = packed->typed_data();
  ParallelFor(pool, tiles, /*grain=*/1, [&](int64_t t) {
    float* tile = dst + t * K * kTileCols;
    const int64_t n0 = t * kTileCols, cols = std::min<int64_t>(kTileCols, N - n0);
    if (cols < kTileCols) std::memset(tile, 0, K * kTileCols * sizeof(float));
    if (transposed) {  // rows n0.. of [N, K], each contiguous, become columns of the tile
      for (int64_t j = 0; j < cols; ++j) {
        const float* row = src + (n0 + j) * K;
        for (int64_t k = 0; k < K; ++k) tile[k * kTileCols + j] = row[k];
      }
    } else {
      for (int64_t k = 0; k < K; ++k) std::memcpy(tile + k * kTileCols, src + k * N + n0, cols * sizeof(float));
    }
  });
  return ffi::Error::Success();
}

// ---- one query per row over the KV cache ---------------------------------------------------

// q [B, H, K], keys [B, H, K, S] (transposed), values [B, H, S, K], start [B], slot [] -> out [B, H, K]:
// row b's query attends over slots start[b]..slot (its real tokens so far, the newest included),
// transformers' `Attention._attn` without the masked slots, which it weights by exactly zero.
// scores = q . k / sqrt(K); probs = softmax(scores) in float32; out = probs @ v.
ffi::Error CachedAttention(ffi::ThreadPool pool, Stack q, Cache keys, Cache values, Starts start, Scalar slot,
                           ffi::ResultBuffer<ffi::F32, 3> out) {
  const auto qd = q.dimensions(), kd = keys.dimensions(), vd = values.dimensions();
  const int64_t B = qd[0], H = qd[1], K = qd[2], S = kd[3];
  if (kd[0] != B || kd[1] != H || kd[2] != K || vd[0] != B || vd[1] != H || vd[2] != S || vd[3] != K ||
      start.dimensions()[0] != B)
    return ffi::Error::InvalidArgument("gpt_flax_cached_attention: operand shapes do not match");
  const int64_t last = *slot.typed_data();
  const int32_t* starts = start.typed_data();
  if (last < 0 || last >= S) return ffi::Error::InvalidArgument("gpt_flax_cached_attention: slot outside the cache");
  for (int64_t b = 0; b < B; ++b) {
    if (starts[b] < 0) return ffi::Error::InvalidArgument("gpt_flax_cached_attention: a row's start is negative");
    if (starts[b] > last)
      return ffi::Error::InvalidArgument("gpt_flax_cached_attention: a row starts after the current slot");
  }
  const float scale = float(std::sqrt(double(K)));  // as transformers' `w / math.sqrt(v.size(-1))`
  const float* qs = q.typed_data();
  const float* ks = keys.typed_data();
  const float* vs = values.typed_data();
  float* os = out->typed_data();
  ParallelFor(pool, B * H, /*grain=*/1, [&](int64_t bh) {
    const int64_t first = starts[bh / H], n = last + 1 - first;
    const float* qv = qs + bh * K;
    const float* kt = ks + bh * K * S + first;  // kt[k * S + j]: key of slot first + j
    const float* v = vs + (bh * S + first) * K;
    std::vector<float> scores(n, 0.f);
    for (int64_t k = 0; k < K; ++k) {
      const float qk = qv[k];
      const float* row = kt + k * S;
      for (int64_t j = 0; j < n; ++j) scores[j] += qk * row[j];
    }
    float top = -INFINITY;
    for (int64_t j = 0; j < n; ++j) top = std::max(top, scores[j] /= scale);
    float total = 0.f;
    for (int64_t j = 0; j < n; ++j) total += scores[j] = std::exp(scores[j] - top);
    float* o = os + bh * K;
    std::fill(o, o + K, 0.f);
    for (int64_t j = 0; j < n; ++j) {
      const float p = scores[j] / total;
      const float* vj = v + j * K;
      for (int64_t k = 0; k < K; ++k) o[k] += p * vj[k];
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GptFlaxPackedMatmul, PackedMatmul,
                              ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<Matrix>().Arg<Stack>().Ret<Matrix>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(GptFlaxPack, Pack,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Stack>()
                                  .Ret<Stack>()
                                  .Attr<int64_t>("layer")
                                  .Attr<bool>("transposed"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(GptFlaxCachedAttention, CachedAttention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<Stack>()
                                  .Arg<Cache>()
                                  .Arg<Cache>()
                                  .Arg<Starts>()
                                  .Arg<Scalar>()
                                  .Ret<Stack>());
