#pragma once
/// Hugging Face model directories, the format vLLM users have: a directory
/// with `config.json`, `*.safetensors` (one file, or shards named by
/// `model.safetensors.index.json`), `tokenizer.json` and
/// `tokenizer_config.json`, read into the same gguf_file every other part of
/// the engine reads (llama_model, read_vocab, the cost model's shapes), so
/// the cpu and cuda backends load it as they load a GGUF.
///
/// What is read:
/// - config.json: LlamaForCausalLM / MistralForCausalLM (GGUF arch
///   "llama") and Qwen2ForCausalLM ("qwen2"), their sizes, rms_norm_eps,
///   rope_theta, head_dim, tie_word_embeddings; rope_scaling is refused (the
///   forward pass does not run it).
/// - safetensors: F32, F16 and BF16 tensors, mapped, not copied, except what
///   the engine needs in another layout: the query and key projections of
///   "llama" models, whose rows are interleaved per head as
///   llama.cpp's converter does (GGUF rotates adjacent pairs, HF the two
///   halves of a head), and norms and biases, converted to F32.
/// - tokenizer.json: byte-level BPE (GPT-2 style; its pre-tokenizer matched
///   to llama.cpp's names: gpt-2, smollm, llama-bpe, qwen2) or
///   SentencePiece-style BPE (byte_fallback, "▁" for spaces: Llama 2,
///   Mistral), read as llama.cpp's SentencePiece tokenizer with scores from
///   the merges' ranks; added tokens as control (special) or user-defined.
/// - tokenizer_config.json: bos/eos tokens, add_bos_token, chat_template.
///
/// Errors are gguf::gguf_error naming the directory's file and what in it.

#include <memory>
#include <string>

#include "engine/gguf.hpp"

namespace llmux::engine {

/// Reads a Hugging Face model directory; without `weights`, its metadata
/// and tokenizer only (no tensors: what the edge and the cluster's shape
/// checks need, without mapping the shards or copying a row). Throws
/// gguf::gguf_error.
[[nodiscard]] std::shared_ptr<gguf::gguf_file> open_hf_directory(const std::string& dir, bool weights = true);

/// A model file as users name it: a Hugging Face directory, else a GGUF file
/// (mapped whole either way; `weights` matters for directories only).
[[nodiscard]] std::shared_ptr<gguf::gguf_file> open_model_file(const std::string& path, bool weights = true);

}  // namespace llmux::engine
