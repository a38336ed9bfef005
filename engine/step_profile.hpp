#pragma once
/// Measured step latencies of real engines, and what they say about steps
/// nobody measured (interpolation) — the calibration of `cost_model`.
///
/// The file format is MuxServe's own (`examples/placement/llama.json` in
/// hao-ai-lab/MuxServe; the A100 profile it ships is built in here):
///
///     { "<model>": { "<tp>": { "<share %>": { "<batch>": { "<length>":
///         { "prefill": ms, "decoding": ms } } } } } }
///
/// - `<model>`: a profile key; `cost_model` looks up a model's config name
///   first, then its architecture preset ("llama-7b", ...).
/// - `<tp>`: tensor-parallel size (GPUs, or 1 on a CPU).
/// - `<share %>`: the compute share the job ran on, in percent of the device
///   (SMs through CUDA MPS or green contexts; worker threads of a CPU unit).
/// - `prefill`: one step computing `batch` prompts of `length` tokens each.
/// - `decoding`: one decode step of `batch` sequences, each over a KV cache
///   of `length` tokens.
/// - A value <= 0 (MuxServe writes -1) means "not measured" (out of memory).
/// - Keys beginning with "_" at the top level are metadata, not models
///   (`llmux bench engine --profile` writes "_meta": device, backend, date).
///
/// Interpolation (every query answers, never throws for a known model/tp):
/// - over batch and length: piecewise linear between the measured points
///   around the query (length first, within each measured batch; then over
///   batch); outside the measured range, linear extrapolation from the two
///   nearest points, never below the nearest measured value;
/// - over share: linear between the two measured percentages around it;
///   below the smallest, the smallest's time × (smallest / share) (work
///   that fills fewer SMs takes longer in proportion); above the largest,
///   the largest's time.
///
/// Pure data, no I/O beyond `load`; thread-safe for concurrent const use.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace llmux::engine {

/// One measured point: milliseconds, <= 0 when not measured.
struct profile_point {
  double prefill_ms = -1;
  double decode_ms = -1;
};

class step_profile {
public:
  /// length → point
  using length_table = std::map<int, profile_point>;
  /// batch → lengths
  using batch_table = std::map<int, length_table>;
  /// share percent → batches
  using share_table = std::map<int, batch_table>;
  /// tp → shares
  using tp_table = std::map<int, share_table>;

  step_profile() = default;

  /// Parses the JSON text of a profile. Throws std::runtime_error naming
  /// `source` and the offending key path on malformed input (not JSON, a
  /// non-numeric key, a point without "prefill"/"decoding").
  [[nodiscard]] static step_profile parse(const std::string& json_text, const std::string& source);
  /// Reads and parses a file; throws std::runtime_error naming the file.
  [[nodiscard]] static step_profile load(const std::string& path);
  /// MuxServe's A100-80GB profile of LLaMA 7B/13B/30B/65B (fp16, CUDA MPS
  /// shares 30..100%), shipped in engine/profiles/a100_llama.json and
  /// compiled into the binary.
  [[nodiscard]] static const step_profile& builtin_a100();
  /// `spec` is a file path, or "builtin:a100" for `builtin_a100()`.
  [[nodiscard]] static step_profile resolve(const std::string& spec);
  /// The same, parsed once per process and shared (a sim cluster builds one
  /// cost model per model; each must not parse a 750 KB file again).
  /// Thread-safe. Throws as `load`.
  [[nodiscard]] static std::shared_ptr<const step_profile> shared(const std::string& spec);

  /// Serializes to the same format (metadata under "_meta" if set).
  [[nodiscard]] std::string to_json_text() const;

  /// Records one measured point (replacing an earlier one).
  void set(const std::string& model, int tp, int share_pct, int batch, int length, profile_point p);
  /// Free-form metadata written under "_meta" (device, backend, command).
  void set_meta(const std::string& key, const std::string& value) { meta_[key] = value; }
  [[nodiscard]] const std::map<std::string, std::string>& meta() const { return meta_; }

  [[nodiscard]] bool has(const std::string& model) const { return models_.count(model) != 0; }
  [[nodiscard]] bool has(const std::string& model, int tp) const;
  /// Model keys, sorted.
  [[nodiscard]] std::vector<std::string> models() const;
  /// Measured tensor-parallel sizes of `model`, ascending (empty if unknown).
  [[nodiscard]] std::vector<int> tp_sizes(const std::string& model) const;
  /// Measured share percentages of (model, tp), ascending.
  [[nodiscard]] std::vector<int> share_percents(const std::string& model, int tp) const;
  /// Largest measured batch of (model, tp) with any measured decode point.
  [[nodiscard]] int max_batch(const std::string& model, int tp) const;
  [[nodiscard]] const std::map<std::string, tp_table>& tables() const { return models_; }

  /// Interpolated step times in seconds (see the header comment). `share`
  /// in (0, 1]; batch >= 1; length >= 1 tokens (values outside are clamped:
  /// share to [0.01, 1], batch and length to at least 1). nullopt when the
  /// model or tp is not in the profile, or no point of that kind was measured.
  [[nodiscard]] std::optional<double> prefill_seconds(const std::string& model, int tp, double share,
                                                      double batch, double length) const;
  [[nodiscard]] std::optional<double> decode_seconds(const std::string& model, int tp, double share,
                                                     double batch, double length) const;

private:
  std::map<std::string, tp_table> models_;
  std::map<std::string, std::string> meta_;
};

/// How far interpolation is from the truth, judged on the profile itself:
/// one row per kind ("prefill", "decode") and axis ("batch", "length",
/// "share"). Each measured point that is interior along the axis (not the
/// smallest or largest measured coordinate there, with the other three
/// coordinates fixed) is held out and predicted by `prefill_seconds` /
/// `decode_seconds` from what remains: along "length" the point alone is
/// removed; along "batch" its whole batch (every length) at that share; along
/// "share" its whole share table — otherwise the length-first interpolation
/// would answer a batch or share hold-out from the other lengths of the same
/// batch. Errors are relative, |predicted − measured| / measured, over every
/// model and tp of the profile.
struct holdout_error {
  std::string kind;   ///< "prefill" | "decode"
  std::string axis;   ///< "batch" | "length" | "share"
  size_t points = 0;  ///< held-out points (0: the statistics below are 0)
  double median = 0, p90 = 0, max = 0;  ///< relative errors (0.05 = 5%)
  /// The point of the largest error: "llama-7b tp 8 share 100 batch 16
  /// length 128: measured 18.95 ms, predicted 14.19 ms".
  std::string worst;
};

/// Six rows: prefill then decode, each over batch, length and share.
/// Pure; about 30 ms for builtin_a100().
[[nodiscard]] std::vector<holdout_error> holdout_errors(const step_profile& profile);

}  // namespace llmux::engine
