#include "engine/engine_factory.hpp"

#include "engine/sim_engine.hpp"

namespace llmux::engine {

namespace {

[[noreturn]] void unavailable(const config::model_config& model) {
  throw backend_unavailable("model '" + model.name + "': backend '" + model.backend
                            + "' is not available in this build (only 'sim' is)");
}

}  // namespace

std::unique_ptr<engine> make_engine(const config::model_config& model,
                                    const config::gpu_spec& gpu, double share) {
  if (model.backend == "sim")
    return std::make_unique<sim_engine>(model.arch, gpu, share);
  unavailable(model);
}

std::shared_ptr<tokenizer> make_tokenizer(const config::model_config& model) {
  if (model.backend == "sim")
    return std::make_shared<sim_tokenizer>();
  unavailable(model);
}

}  // namespace llmux::engine
