// The CUDA kernels against the CPU reference (kernels/cpu/ops.hpp), on
// random inputs of awkward sizes, in f32, f16 and bf16. Every output buffer
// is poisoned (all bits set: NaN in each type) before a kernel runs, so an
// element a kernel forgets to write fails the comparison. The reference gets
// the same inputs rounded to the activation type, so what is compared is the
// kernel's arithmetic and its output rounding.
//
// Without a GPU the binary says why and exits 77 (ctest: skipped).

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/ops.hpp"
#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/ops.hpp"
#include "kernels/cuda/partitions.hpp"
#include "tests/cuda/cuda_test_util.hpp"

using llmux::cuda::act;
using namespace llmux::cuda::test;

TEST_CASE("rmsnorm with and without the fused residual add", "[cuda]") {
  std::mt19937 rng(1);
  const int64_t rows = 5, n = 1003;
  const float eps = 1e-5f;
  for (act t : all_types) {
    INFO("type " << cu::to_string(t));
    auto x = rounded(t, random_floats(rows * n, rng, -2, 2));
    auto res = rounded(t, random_floats(rows * n, rng, -2, 2));
    auto w = rounded(t, random_floats(n, rng, 0.5f, 1.5f));
    auto dx = upload_act(t, x), dres = upload_act(t, res), dw = upload_act(t, w);
    device_buffer dout(rows * n * cu::act_bytes(t));

    dout.poison();
    cu::rmsnorm(t, dx.p, nullptr, nullptr, dw.p, eps, rows, n, dout.p, nullptr);
    std::vector<float> want(rows * n);
    cpu::rmsnorm_ref(x.data(), w.data(), eps, rows, n, want.data());
    require_close(decode(t, dout.download()), want, tolerance(t), "rmsnorm");

    // Residual added, the new residual stream written over `res`, the
    // normed output over x: both in place.
    cu::rmsnorm(t, dx.p, dres.p, dres.p, dw.p, eps, rows, n, dx.p, nullptr);
    std::vector<float> h(rows * n);
    for (size_t i = 0; i < h.size(); ++i)
      h[i] = x[i] + res[i];
    cpu::rmsnorm_ref(h.data(), w.data(), eps, rows, n, want.data());
    require_close(decode(t, dx.download()), want, tolerance(t), "rmsnorm(x + residual)");
    require_close(decode(t, dres.download()), rounded(t, h), tolerance(t), "residual stream");
  }
}

TEST_CASE("rope rotates Llama pairs and NeoX halves, partial rotation, far positions", "[cuda]") {
  std::mt19937 rng(2);
  const int heads = 5, head_dim = 72, rot_dim = 64;
  const std::vector<int32_t> pos = {0, 17, 1999};
  const auto rows = static_cast<int64_t>(pos.size());
  auto dpos = upload_vec(pos);
  for (act t : all_types)
    for (bool neox : {false, true}) {
      INFO("type " << cu::to_string(t) << ", neox " << neox);
      auto x = rounded(t, random_floats(rows * heads * head_dim, rng));
      auto dx = upload_act(t, x);
      cu::rope(t, dx.p, rows, heads, head_dim, rot_dim, dpos.as<int32_t>(), 10000.0f, neox, nullptr);
      auto want = x;
      for (int64_t r = 0; r < rows; ++r)
        cpu::rope_ref(&want[r * heads * head_dim], heads, head_dim, rot_dim, pos[r], 10000.0f, neox);
      // The kernel builds each angle as the reference does (the same float
      // products), so only sinf/cosf and the output rounding differ.
      require_close(decode(t, dx.download()), want, std::max(tolerance(t), 1e-4), "rope");
    }
}

TEST_CASE("swiglu in place over an odd length", "[cuda]") {
  std::mt19937 rng(3);
  const int64_t n = 4099;
  for (act t : all_types) {
    INFO("type " << cu::to_string(t));
    auto g = rounded(t, random_floats(n, rng, -6, 6));
    auto u = rounded(t, random_floats(n, rng, -2, 2));
    auto dg = upload_act(t, g), du = upload_act(t, u);
    cu::swiglu(t, dg.p, du.p, n, dg.p, nullptr);
    std::vector<float> want(n);
    cpu::swiglu_ref(g.data(), u.data(), n, want.data());
    require_close(decode(t, dg.download()), want, tolerance(t), "swiglu");
  }
}

TEST_CASE("add_bias adds one bias row to every row", "[cuda]") {
  std::mt19937 rng(10);
  const int64_t rows = 7, n = 901;
  for (act t : all_types) {
    INFO("type " << cu::to_string(t));
    auto x = rounded(t, random_floats(rows * n, rng, -3, 3));
    auto b = rounded(t, random_floats(n, rng, -1, 1));
    auto dx = upload_act(t, x), db = upload_act(t, b);
    cu::add_bias(t, dx.p, db.p, rows, n, nullptr);
    std::vector<float> want(x);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < n; ++i)
        want[static_cast<size_t>(r * n + i)] += b[static_cast<size_t>(i)];
    require_close(decode(t, dx.download()), want, tolerance(t), "add_bias");
  }
}

TEST_CASE("embedding gathers rows exactly, repeated ids too", "[cuda]") {
  std::mt19937 rng(4);
  const int64_t vocab = 37, n = 301;
  const std::vector<int32_t> ids = {5, 0, 36, 5};
  auto dids = upload_vec(ids);
  for (act t : all_types) {
    INFO("type " << cu::to_string(t));
    auto table = rounded(t, random_floats(vocab * n, rng));
    auto dtable = upload_act(t, table);
    device_buffer dout(ids.size() * n * cu::act_bytes(t));
    dout.poison();
    cu::embedding(t, dtable.p, dids.as<int32_t>(), static_cast<int64_t>(ids.size()), n, dout.p, nullptr);
    auto got = decode(t, dout.download());
    for (size_t r = 0; r < ids.size(); ++r)
      for (int64_t i = 0; i < n; ++i)
        REQUIRE(got[r * n + i] == table[ids[r] * n + i]);
  }
}

namespace {

/// Three sequences over a paged, head-wise KV arena of two layers, as the
/// kv_manager would grant it: shuffled block ids, blocks sized for a larger
/// head than the model's (the front of each block is used).
struct paged_fixture {
  static constexpr int layers = 2, n_head = 6, n_head_kv = 2, head_dim = 80, block_tokens = 16;
  static constexpr int block_head = 96;  // the arena's largest head
  static constexpr int per_tb = layers * n_head_kv;
  std::vector<int32_t> ctx = {1, 37, 100};  // tokens per sequence
  std::vector<int32_t> tables;             // back to back, per_tb ids per token-block
  std::vector<int32_t> start;              // each sequence's first token-block in `tables`
  int64_t arena_blocks = 0;
  int64_t block_elems = 2 * block_tokens * block_head;
  /// K and V per (sequence, layer): [ctx, n_head_kv · head_dim], f32.
  std::vector<std::vector<float>> k, v;

  explicit paged_fixture(std::mt19937& rng) {
    int64_t tbs = 0;
    for (int32_t c : ctx) {
      start.push_back(static_cast<int32_t>(tbs));
      tbs += (c + block_tokens - 1) / block_tokens;
    }
    arena_blocks = tbs * per_tb + 20;  // some blocks nobody owns
    std::vector<int32_t> ids(static_cast<size_t>(arena_blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    tables.assign(ids.begin(), ids.begin() + tbs * per_tb);
    for (size_t s = 0; s < ctx.size(); ++s)
      for (int l = 0; l < layers; ++l) {
        k.push_back(random_floats(static_cast<size_t>(ctx[s]) * n_head_kv * head_dim, rng));
        v.push_back(random_floats(static_cast<size_t>(ctx[s]) * n_head_kv * head_dim, rng));
      }
  }
  const std::vector<float>& K(size_t s, int l) const { return k[s * layers + l]; }
  const std::vector<float>& V(size_t s, int l) const { return v[s * layers + l]; }
};

}  // namespace

namespace {

/// Every position of every sequence and layer into the cache: one kv_append
/// per sequence and layer, all its positions at once.
void fill_cache(const paged_fixture& f, act t, device_buffer& arena, device_buffer& dtables) {
  for (size_t s = 0; s < f.ctx.size(); ++s) {
    std::vector<int32_t> pos(static_cast<size_t>(f.ctx[s]));
    std::iota(pos.begin(), pos.end(), 0);
    std::vector<int32_t> starts(pos.size(), f.start[s]);
    auto dpos = upload_vec(pos), dstart = upload_vec(starts);
    cu::paged_kv kv{arena.as<uint16_t>(), f.block_elems, f.block_tokens, f.head_dim, f.n_head_kv, f.per_tb,
                    dtables.as<int32_t>(), dstart.as<int32_t>(), dpos.as<int32_t>()};
    for (int l = 0; l < f.layers; ++l) {
      auto dk = upload_act(t, f.K(s, l)), dv = upload_act(t, f.V(s, l));
      cu::kv_append(t, dk.p, dv.p, f.ctx[s], l, kv, nullptr);
    }
  }
}

/// One attention run over rows of the fixture: random q in type t, the
/// cache filled through kv_append (poison past each sequence's positions),
/// a poisoned output, and the paged_kv over the rows' tables.
struct attention_inputs {
  std::vector<float> q;
  device_buffer arena, dq, dout;
  cu::paged_kv kv;
  attention_inputs(const paged_fixture& f, act t, int64_t rows, device_buffer& dtables, device_buffer& dstart,
                   device_buffer& dpos, std::mt19937& rng)
    : q(rounded(t, random_floats(static_cast<size_t>(rows) * f.n_head * f.head_dim, rng, -2, 2))),
      arena(static_cast<size_t>(f.arena_blocks * f.block_elems) * 2),
      dq(upload_act(t, q)),
      dout(q.size() * cu::act_bytes(t)),
      kv{arena.as<uint16_t>(), f.block_elems,          f.block_tokens,       f.head_dim, f.n_head_kv,
         f.per_tb,             dtables.as<int32_t>(), dstart.as<int32_t>(), dpos.as<int32_t>()} {
    arena.poison();
    fill_cache(f, t, arena, dtables);  // through kv_append, tested above
    dout.poison();
  }
};

/// The CPU reference's attention of rows (sequence row_seq[r] at position
/// row_pos[r]) over the fixture's K and V of `layer`, as the cache holds
/// them (the activation type, then f16).
std::vector<float> attention_reference(const paged_fixture& f, act t, int layer, float scale,
                                       const std::vector<float>& q, const std::vector<int32_t>& row_seq,
                                       const std::vector<int32_t>& row_pos) {
  std::vector<float> want(q.size());
  const int group = f.n_head / f.n_head_kv;
  for (size_t r = 0; r < row_seq.size(); ++r) {
    const auto s = static_cast<size_t>(row_seq[r]);
    const int64_t ctx = row_pos[r] + 1;
    auto kk = rounded(act::f16, rounded(t, f.K(s, layer))), vv = rounded(act::f16, rounded(t, f.V(s, layer)));
    for (int h = 0; h < f.n_head; ++h) {
      const int kvh = h / group;
      std::vector<float> kh(static_cast<size_t>(ctx * f.head_dim)), vh(kh.size());
      for (int64_t j = 0; j < ctx; ++j)
        for (int d = 0; d < f.head_dim; ++d) {
          kh[j * f.head_dim + d] = kk[(j * f.n_head_kv + kvh) * f.head_dim + d];
          vh[j * f.head_dim + d] = vv[(j * f.n_head_kv + kvh) * f.head_dim + d];
        }
      cpu::attention_row_ref(&q[(r * f.n_head + h) * f.head_dim], kh.data(), vh.data(), ctx, f.head_dim, scale,
                             &want[(r * f.n_head + h) * f.head_dim]);
    }
  }
  return want;
}

}  // namespace

TEST_CASE("kv_append writes each row's K and V into its paged slots, and nothing else", "[cuda]") {
  std::mt19937 rng(5);
  paged_fixture f(rng);
  for (act t : all_types) {
    INFO("type " << cu::to_string(t));
    device_buffer arena(static_cast<size_t>(f.arena_blocks * f.block_elems) * 2);
    arena.poison();
    auto dtables = upload_vec(f.tables);
    fill_cache(f, t, arena, dtables);
    auto bytes = arena.download();
    const auto* got = reinterpret_cast<const uint16_t*>(bytes.data());
    std::vector<bool> written(static_cast<size_t>(f.arena_blocks * f.block_elems), false);
    size_t wrong = 0;
    for (size_t s = 0; s < f.ctx.size(); ++s)
      for (int l = 0; l < f.layers; ++l) {
        // The cache holds f16 of what the activation type held.
        auto kk = rounded(act::f16, rounded(t, f.K(s, l))), vv = rounded(act::f16, rounded(t, f.V(s, l)));
        for (int32_t p = 0; p < f.ctx[s]; ++p)
          for (int h = 0; h < f.n_head_kv; ++h) {
            const int64_t tb = f.start[s] + p / f.block_tokens;
            const int64_t id = f.tables[tb * f.per_tb + l * f.n_head_kv + h];
            const int64_t slot = static_cast<int64_t>(p % f.block_tokens) * f.head_dim;
            for (int d = 0; d < f.head_dim; ++d) {
              const int64_t ke = id * f.block_elems + slot + d;
              const int64_t ve = ke + static_cast<int64_t>(f.block_tokens) * f.head_dim;
              const size_t src = (static_cast<size_t>(p) * f.n_head_kv + h) * f.head_dim + d;
              uint16_t want_k, want_v;
              cpu::fp32_to_fp16_row(&kk[src], &want_k, 1);
              cpu::fp32_to_fp16_row(&vv[src], &want_v, 1);
              wrong += got[ke] != want_k;
              wrong += got[ve] != want_v;
              written[static_cast<size_t>(ke)] = written[static_cast<size_t>(ve)] = true;
            }
          }
      }
    CHECK(wrong == 0);
    size_t stray = 0;  // elements no row owns keep the poison
    for (size_t i = 0; i < written.size(); ++i)
      stray += !written[i] && got[i] != 0xFFFF;
    CHECK(stray == 0);
  }
}

TEST_CASE("paged_attention: decode rows and a prefill chunk over a cached prefix, GQA, two layers", "[cuda]") {
  std::mt19937 rng(6);
  paged_fixture f(rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(f.head_dim));
  // Decode rows of all three sequences, then rows 90..98 of the third: a
  // prefill chunk whose first 90 positions are a cached prefix.
  std::vector<int32_t> row_seq = {0, 1, 2}, row_pos = {0, 36, 99};
  for (int32_t p = 90; p < 99; ++p) {
    row_seq.push_back(2);
    row_pos.push_back(p);
  }
  const auto rows = static_cast<int64_t>(row_seq.size());
  std::vector<int32_t> row_start;
  for (int32_t s : row_seq)
    row_start.push_back(f.start[static_cast<size_t>(s)]);
  auto dtables = upload_vec(f.tables), dstart = upload_vec(row_start), dpos = upload_vec(row_pos);
  for (act t : all_types)
    for (int layer = 0; layer < f.layers; ++layer) {
      INFO("type " << cu::to_string(t) << ", layer " << layer);
      attention_inputs a(f, t, rows, dtables, dstart, dpos, rng);
      const auto& q = a.q;
      cu::paged_attention(t, a.dq.p, rows, f.n_head, layer, scale, a.kv, a.dout.p, nullptr);

      const auto want = attention_reference(f, t, layer, scale, q, row_seq, row_pos);
      // The reference rounds q and the probabilities to f16 as llama.cpp's
      // CPU attention does; the kernel keeps them in f32.
      const auto all = decode(t, a.dout.download());
      require_close(all, want, std::max(tolerance(t), 4e-3), "paged_attention");
      // A row list: only rows 2 and 0 are computed (the same values), the
      // rest keep the poison.
      auto dids = upload_vec(std::vector<int32_t>{2, 0});
      a.dout.poison();
      cu::paged_attention(t, a.dq.p, 2, f.n_head, layer, scale, a.kv, a.dout.p, nullptr, dids.as<int32_t>());
      const auto some = decode(t, a.dout.download());
      const auto width = static_cast<size_t>(f.n_head * f.head_dim);
      for (size_t r = 0; r < static_cast<size_t>(rows); ++r)
        for (size_t i = 0; i < width; ++i) {
          const float got = some[r * width + i];
          if (r == 0 || r == 2)
            REQUIRE(got == all[r * width + i]);
          else
            REQUIRE(std::isnan(got));
        }
    }
}

TEST_CASE("paged_attention_tiled: prefill tiles over cached prefixes on tensor cores, GQA, two layers", "[cuda]") {
  std::mt19937 rng(12);
  paged_fixture f(rng);
  REQUIRE(cu::paged_attention_tiled_supported(cu::paged_kv{nullptr, f.block_elems, f.block_tokens, f.head_dim}));
  const float scale = 1.0f / std::sqrt(static_cast<float>(f.head_dim));
  // Tiles: rows 90..98 of the third sequence (a chunk after a 90-token
  // cached prefix, crossing a block at 96), rows 20..36 of the second (16
  // rows, then 1: a tile ends inside a block), and a lone row at position 0.
  std::vector<int32_t> row_seq, row_pos, tiles;
  auto add_tile = [&](int32_t s, int32_t p0, int32_t n) {
    tiles.push_back(static_cast<int32_t>(row_seq.size()));
    tiles.push_back(n);
    for (int32_t i = 0; i < n; ++i) {
      row_seq.push_back(s);
      row_pos.push_back(p0 + i);
    }
  };
  add_tile(2, 90, 9);
  add_tile(1, 20, 16);
  add_tile(1, 36, 1);
  add_tile(0, 0, 1);
  const auto rows = static_cast<int64_t>(row_seq.size());
  std::vector<int32_t> row_start;
  for (int32_t s : row_seq)
    row_start.push_back(f.start[static_cast<size_t>(s)]);
  auto dtables = upload_vec(f.tables), dstart = upload_vec(row_start), dpos = upload_vec(row_pos),
       dtiles = upload_vec(tiles);
  for (act t : all_types)
    for (int layer = 0; layer < f.layers; ++layer) {
      INFO("type " << cu::to_string(t) << ", layer " << layer);
      // Blocks past each sequence's written positions hold NaN.
      attention_inputs a(f, t, rows, dtables, dstart, dpos, rng);
      cu::paged_attention_tiled(t, a.dq.p, dtiles.as<int32_t>(), static_cast<int64_t>(tiles.size() / 2), f.n_head,
                                layer, scale, a.kv, a.dout.p, nullptr);
      const auto want = attention_reference(f, t, layer, scale, a.q, row_seq, row_pos);
      // q and the probabilities in f16, as the reference rounds them.
      require_close(decode(t, a.dout.download()), want, std::max(tolerance(t), 4e-3), "paged_attention_tiled");
    }
  // What it does not take.
  cu::paged_kv odd{nullptr, 0, 16, 72, 1};
  CHECK_FALSE(cu::paged_attention_tiled_supported(odd));
  odd.head_dim = 64;
  odd.block_tokens = 8;
  CHECK_FALSE(cu::paged_attention_tiled_supported(odd));
}

TEST_CASE("a tensor-parallel rank's kv_append and paged_attention address its own heads of the tables", "[cuda]") {
  // Two ranks of the fixture's model: one KV head and three query heads
  // each. Written rank by rank, the cache must equal the whole model's
  // write byte for byte; a rank's attention must equal its heads of the
  // whole model's attention (the kernel tested against the CPU above).
  std::mt19937 rng(11);
  paged_fixture f(rng);
  const act t = act::f32;
  const int ranks = 2, kv_local = f.n_head_kv / ranks, q_local = f.n_head / ranks;
  const size_t arena_bytes = static_cast<size_t>(f.arena_blocks * f.block_elems) * 2;
  auto dtables = upload_vec(f.tables);
  device_buffer whole(arena_bytes), split(arena_bytes);
  whole.poison();
  split.poison();
  fill_cache(f, t, whole, dtables);
  for (int r = 0; r < ranks; ++r)
    for (size_t s = 0; s < f.ctx.size(); ++s) {
      std::vector<int32_t> pos(static_cast<size_t>(f.ctx[s]));
      std::iota(pos.begin(), pos.end(), 0);
      std::vector<int32_t> starts(pos.size(), f.start[s]);
      auto dpos = upload_vec(pos), dstart = upload_vec(starts);
      cu::paged_kv kv{split.as<uint16_t>(), f.block_elems, f.block_tokens, f.head_dim, kv_local, f.per_tb,
                      dtables.as<int32_t>(), dstart.as<int32_t>(), dpos.as<int32_t>(), r * kv_local, f.n_head_kv};
      for (int l = 0; l < f.layers; ++l) {
        auto slice = [&](const std::vector<float>& x) {  // the rank's heads of each position
          std::vector<float> out;
          for (int32_t j = 0; j < f.ctx[s]; ++j) {
            const auto row = x.begin() + (int64_t{j} * f.n_head_kv + r * kv_local) * f.head_dim;
            out.insert(out.end(), row, row + int64_t{kv_local} * f.head_dim);
          }
          return out;
        };
        auto dk = upload_act(t, slice(f.K(s, l))), dv = upload_act(t, slice(f.V(s, l)));
        cu::kv_append(t, dk.p, dv.p, f.ctx[s], l, kv, nullptr);
      }
    }
  CHECK(split.download() == whole.download());

  const std::vector<int32_t> row_seq = {0, 1, 2}, row_pos = {0, 36, 99};
  const auto rows = static_cast<int64_t>(row_seq.size());
  std::vector<int32_t> row_start;
  for (int32_t s : row_seq)
    row_start.push_back(f.start[static_cast<size_t>(s)]);
  auto dstart = upload_vec(row_start), dpos = upload_vec(row_pos);
  const float scale = 1.0f / std::sqrt(static_cast<float>(f.head_dim));
  for (int layer = 0; layer < f.layers; ++layer) {
    auto q = random_floats(static_cast<size_t>(rows) * f.n_head * f.head_dim, rng, -2, 2);
    auto dq = upload_act(t, q);
    device_buffer dall(q.size() * 4);
    cu::paged_kv kv{whole.as<uint16_t>(), f.block_elems, f.block_tokens, f.head_dim, f.n_head_kv, f.per_tb,
                    dtables.as<int32_t>(), dstart.as<int32_t>(), dpos.as<int32_t>()};
    cu::paged_attention(t, dq.p, rows, f.n_head, layer, scale, kv, dall.p, nullptr);
    const auto all = decode(t, dall.download());
    for (int r = 0; r < ranks; ++r) {
      INFO("layer " << layer << ", rank " << r);
      std::vector<float> qr, want;
      for (int64_t i = 0; i < rows; ++i) {
        const auto from = (i * f.n_head + r * q_local) * f.head_dim, to = from + int64_t{q_local} * f.head_dim;
        qr.insert(qr.end(), q.begin() + from, q.begin() + to);
        want.insert(want.end(), all.begin() + from, all.begin() + to);
      }
      auto dqr = upload_act(t, qr);
      device_buffer dout(qr.size() * 4);
      dout.poison();
      cu::paged_kv rk = kv;
      rk.n_head_kv = kv_local;
      rk.head_base = r * kv_local;
      rk.table_heads = f.n_head_kv;
      cu::paged_attention(t, dqr.p, rows, q_local, layer, scale, rk, dout.p, nullptr);
      require_close(decode(t, dout.download()), want, 1e-6, "a rank's attention");
    }
  }
}

TEST_CASE("argmax_logprob: the lowest id among ties, and its log-softmax", "[cuda]") {
  std::mt19937 rng(7);
  const int64_t rows = 4, vocab = 32003;
  auto logits = random_floats(rows * vocab, rng, -8, 8);
  // Row 2: two equal maxima in one warp (threads 24 and 9 of 256); the
  // lower id wins.
  logits[2 * vocab + 31000] = 20.0f;
  logits[2 * vocab + 777] = 20.0f;
  // Row 3: equal maxima across warps and within a thread: 250 (thread 250,
  // the last warp), 266 (thread 10, warp 0), 506 (thread 250 again); 250
  // wins, although the first warp holds a maximum too.
  for (int64_t i : {506, 266, 250})
    logits[3 * vocab + i] = 20.0f;
  auto dl = upload_vec(logits);
  device_buffer dids(rows * 4), dlp(rows * 4);
  dids.poison();
  dlp.poison();
  cu::argmax_logprob(dl.as<float>(), rows, vocab, dids.as<int32_t>(), dlp.as<float>(), nullptr);
  auto ib = dids.download(), lb = dlp.download();
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = &logits[r * vocab];
    const auto best = std::max_element(x, x + vocab) - x;  // the first maximum
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i)
      sum += std::exp(static_cast<double>(x[i]) - x[best]);
    int32_t id;
    float lp;
    std::memcpy(&id, &ib[r * 4], 4);
    std::memcpy(&lp, &lb[r * 4], 4);
    CHECK(id == best);
    CHECK(lp == Approx(-std::log(sum)).margin(1e-4));
  }
  int32_t tie;
  std::memcpy(&tie, &ib[2 * 4], 4);
  CHECK(tie == 777);
  std::memcpy(&tie, &ib[3 * 4], 4);
  CHECK(tie == 250);
}

TEST_CASE("cuBLAS matmul: y = x W^T for row-major activations and GGUF-shaped weights", "[cuda]") {
  std::mt19937 rng(8);
  cu::blas blas(nullptr);
  for (act t : all_types)
    for (int64_t m : {1, 7, 64}) {
      const int64_t n = 515, k = 1000;
      INFO("type " << cu::to_string(t) << ", m " << m);
      auto w = rounded(t, random_floats(n * k, rng));
      auto x = rounded(t, random_floats(m * k, rng));
      auto dw = upload_act(t, w), dx = upload_act(t, x);
      device_buffer dy(static_cast<size_t>(m * n) * cu::act_bytes(t));
      dy.poison();
      blas.matmul(t, dw.p, dx.p, m, n, k, dy.p);
      std::vector<float> want(static_cast<size_t>(m * n));
      cpu::matmul_ref(cpu::matrix_view{w.data(), llmux::kernels::dtype::f32, n, k}, x.data(), m, want.data());
      require_close(decode(t, dy.download()), want, tolerance(t) * 4, "matmul");
    }
}

TEST_CASE("sm_partitions: equal SM groups, and kernels on a partition's stream compute", "[cuda]") {
  cu::sm_partitions parts(0);
  INFO(parts.groups() << " groups of " << parts.group_sms() << " SMs of " << parts.device_sms());
  REQUIRE(parts.groups() >= 2);
  CHECK(parts.groups() * parts.group_sms() <= parts.device_sms());
  cudaDeviceProp prop{};
  cu::check(cudaGetDeviceProperties(&prop, 0), "props");
  if (prop.major == 9)
    CHECK(parts.group_sms() % 8 == 0);  // Hopper's split granularity
  CHECK(parts.groups_for(0.01) == 1);
  CHECK(parts.groups_for(1.0) == parts.groups());
  CHECK(parts.groups_for(0.5) == (parts.groups() + 1) / 2);
  CHECK_THROWS_AS(parts.stream(parts.groups() - 1, 2), cu::cuda_error);
  // The same stream for the same range; a kernel on each of two disjoint
  // ranges computes what the CPU reference does.
  const int half = parts.groups() / 2;
  auto s1 = parts.stream(0, half), s2 = parts.stream(half, parts.groups() - half);
  CHECK(parts.stream(0, half) == s1);
  CHECK(s1 != s2);
  std::mt19937 rng(9);
  const int64_t n = 1 << 20;
  auto g = random_floats(n, rng, -4, 4), u = random_floats(n, rng);
  std::vector<float> want(n);
  cpu::swiglu_ref(g.data(), u.data(), n, want.data());
  for (auto s : {s1, s2}) {
    auto dg = upload_vec(g), du = upload_vec(u);
    device_buffer out(n * 4);
    out.poison();
    cu::swiglu(act::f32, dg.p, du.p, n, out.p, s);
    cu::check(cudaStreamSynchronize(s), "partition stream");
    require_close(decode(act::f32, out.download()), want, tolerance(act::f32), "swiglu on a partition");
  }
}

int main(int argc, char** argv) {
  std::string why;
  if (!cu::device_available(&why)) {
    std::cout << "cuda_kernels_test: SKIPPED, no usable CUDA device: " << why << std::endl;
    return 77;
  }
  int dev = 0;
  cudaDeviceProp prop{};
  cudaGetDevice(&dev);
  cudaGetDeviceProperties(&prop, dev);
  std::cout << "cuda_kernels_test: on " << prop.name << " (sm_" << prop.major << prop.minor << ")" << std::endl;
  return Catch::Session().run(argc, argv);
}
