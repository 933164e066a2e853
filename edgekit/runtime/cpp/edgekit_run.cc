// edgekit_run: run an edgekit artifact's model.so with only the TVM runtime (no Python).
//
// Used for targets this host cannot execute natively (aarch64 under qemu-user, a board over ssh) and as
// the C++ embedding example. Inputs/outputs are raw little-endian buffers described by a manifest:
//
//   edgekit_run model.so io_dir [warmup] [repeat]
//   io_dir/inputs.txt   one line per input:  <file> <dl_code> <dl_bits> <ndim> <d0> <d1> ...
//   writes io_dir/output_<i>.bin and io_dir/outputs.txt (same format), prints timings as JSON on stdout.
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

// 64-byte aligned host memory: TVM kernels may assume vector-aligned buffers.
struct AlignedCPUAlloc {
  void AllocData(DLTensor* t) {
    size_t bytes = ffi::GetDataSize(*t);
    t->data = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

static std::vector<char> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

static std::vector<ffi::Tensor> ReadInputs(const std::string& dir) {
  std::ifstream manifest(dir + "/inputs.txt");
  if (!manifest) throw std::runtime_error("cannot read " + dir + "/inputs.txt");
  std::vector<ffi::Tensor> inputs;
  std::string line;
  while (std::getline(manifest, line)) {
    if (line.empty()) continue;
    std::istringstream fields(line);
    std::string file;
    int code, bits, ndim;
    fields >> file >> code >> bits >> ndim;
    std::vector<int64_t> shape(ndim);
    for (auto& d : shape) fields >> d;
    DLDataType dtype{static_cast<uint8_t>(code), static_cast<uint8_t>(bits), 1};
    ffi::Tensor t = ffi::Tensor::FromNDAlloc(AlignedCPUAlloc(), ffi::Shape(shape), dtype, DLDevice{kDLCPU, 0});
    std::vector<char> bytes = ReadFile(dir + "/" + file);
    if (bytes.size() != ffi::GetDataSize(t)) throw std::runtime_error(file + ": wrong byte size");
    std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
    inputs.push_back(t);
  }
  return inputs;
}

static void WriteOutputs(const std::string& dir, const ffi::Any& result) {
  std::vector<ffi::Tensor> outs;
  if (auto single = result.as<ffi::Tensor>()) {
    outs.push_back(*single);
  } else {
    for (const ffi::Any& item : result.cast<ffi::Array<ffi::Any>>()) outs.push_back(item.cast<ffi::Tensor>());
  }
  std::ofstream manifest(dir + "/outputs.txt");
  for (size_t i = 0; i < outs.size(); ++i) {
    const DLTensor* t = outs[i].GetDLTensorPtr();
    std::string file = "output_" + std::to_string(i) + ".bin";
    std::ofstream(dir + "/" + file, std::ios::binary)
        .write(static_cast<const char*>(t->data) + t->byte_offset, ffi::GetDataSize(*t));
    manifest << file << " " << int(t->dtype.code) << " " << int(t->dtype.bits) << " " << t->ndim;
    for (int d = 0; d < t->ndim; ++d) manifest << " " << t->shape[d];
    manifest << "\n";
  }
}

// Peak resident memory of this process in MB (VmHWM). Under qemu-user it is the emulator's, guest included.
static double PeakRssMB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  }
  return 0.0;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: edgekit_run model.so io_dir [warmup] [repeat]\n";
    return 2;
  }
  int warmup = argc > 3 ? std::atoi(argv[3]) : 0;
  int repeat = argc > 4 ? std::atoi(argv[4]) : 1;
  try {
    ffi::Module lib = ffi::Module::LoadFromFile(argv[1]);
    ffi::Module vm = lib->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
    // device_type=kDLCPU, device_id=0, allocator=pooled (2), as relax.VirtualMachine(tvm.cpu()) does
    vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2);
    ffi::Function main_fn = vm->GetFunction("main").value();
    std::vector<ffi::Tensor> inputs = ReadInputs(argv[2]);
    std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
    ffi::Any result;
    for (int i = 0; i < warmup; ++i) main_fn.CallPacked(args.data(), static_cast<int>(args.size()), &result);
    std::ostringstream times;
    for (int i = 0; i < repeat; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      main_fn.CallPacked(args.data(), static_cast<int>(args.size()), &result);
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      times << (i ? ", " : "") << ms;
    }
    WriteOutputs(argv[2], result);
    std::cout << "{\"times_ms\": [" << times.str() << "], \"peak_rss_mb\": " << PeakRssMB() << "}" << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "edgekit_run: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
