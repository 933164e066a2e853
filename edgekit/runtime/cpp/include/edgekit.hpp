// edgekit.hpp: header-only C++ wrapper over edgekit.h (RAII, exceptions).
//
//   edgekit::Model model("bundle/");
//   model.set_input(0, image);               // std::vector<float> (or any contiguous container)
//   model.run();
//   std::vector<float> logits = model.output<float>(0);
#ifndef EDGEKIT_HPP_
#define EDGEKIT_HPP_

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "edgekit.h"

namespace edgekit {

class Error : public std::runtime_error {
 public:
  Error(edgekit_status status, const std::string& message) : std::runtime_error(message), status(status) {}
  edgekit_status status;
};

inline void check(edgekit_status status) {
  if (status != EDGEKIT_OK) throw Error(status, edgekit_last_error());
}

class Model {
 public:
  explicit Model(const std::string& bundle_dir, int threads = 0) {
    if (threads > 0) check(edgekit_set_num_threads(threads));
    check(edgekit_load(bundle_dir.c_str(), &model_));
  }
  ~Model() { edgekit_free(model_); }
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  Model(Model&& other) noexcept : model_(other.model_) { other.model_ = nullptr; }

  int num_inputs() const { return edgekit_num_inputs(model_); }
  int num_outputs() const { return edgekit_num_outputs(model_); }
  std::string input_name(int i) const { return edgekit_name(model_, 0, i); }
  std::string output_name(int i) const { return edgekit_name(model_, 1, i); }
  std::string input_dtype(int i) const { return edgekit_dtype(model_, 0, i); }
  std::string output_dtype(int i) const { return edgekit_dtype(model_, 1, i); }
  std::vector<int64_t> input_shape(int i) const { return shape(0, i); }
  size_t input_nbytes(int i) const { return edgekit_nbytes(model_, 0, i); }
  std::vector<int64_t> output_shape(int i) const { return shape(1, i); }
  std::string target() const { return edgekit_target(model_); }

  template <typename Container>
  void set_input(int i, const Container& data) {
    check(edgekit_set_input(model_, i, data.data(), data.size() * sizeof(data[0])));
  }
  void set_input(int i, const void* data, size_t nbytes) { check(edgekit_set_input(model_, i, data, nbytes)); }
  void run() { check(edgekit_run(model_)); }

  template <typename T>
  std::vector<T> output(int i) const {
    size_t nbytes = edgekit_nbytes(model_, 1, i);
    std::vector<T> out(nbytes / sizeof(T));
    check(edgekit_get_output(model_, i, out.data(), out.size() * sizeof(T)));
    return out;
  }

 private:
  std::vector<int64_t> shape(int output, int i) const {
    const int64_t* dims = edgekit_shape(model_, output, i);
    if (dims == nullptr) throw Error(EDGEKIT_ERR_ARGUMENT, edgekit_last_error());
    return std::vector<int64_t>(dims, dims + edgekit_ndim(model_, output, i));
  }
  edgekit_model* model_ = nullptr;
};

}  // namespace edgekit
#endif  // EDGEKIT_HPP_
