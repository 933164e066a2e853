// libedgekit: the C API of edgekit.h over the TVM runtime (tvm-ffi + libtvm_runtime). It reads a bundle's
// manifest (edgekit.txt, written by `edgekit package`), refuses bundles for another architecture or for CPU
// features this machine lacks, and runs the Relax VM the bundle's model.so holds.
//
// edgekit.txt, one record per line:
//   edgekit-bundle 1
//   target <name> <arch>
//   requires <feature> ...            (the CPU features the model's code was compiled for)
//   input|output <name> <dtype> <ndim> <d0> <d1> ...   (-1: an output dim known only after a run, e.g. NonMaxSuppression's)
#include "edgekit.h"

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ffi = tvm::ffi;

namespace {

thread_local std::string last_error;

edgekit_status fail(edgekit_status status, const std::string& message) {
  last_error = message;
  return status;
}

struct TensorInfo {
  std::string name, dtype;
  std::vector<int64_t> shape;  // an output's data-dependent dims: -1 until a run, then that run's
  DLDataType dl{};
  size_t nbytes = 0;
  bool dynamic = false;
};

struct AlignedAlloc {  // 64-byte aligned host memory: TVM kernels may assume vector-aligned buffers
  void AllocData(DLTensor* t) { t->data = std::aligned_alloc(64, (ffi::GetDataSize(*t) + 63) / 64 * 64); }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

bool parse_dtype(const std::string& name, DLDataType* out) {
  static const std::map<std::string, DLDataType> known = {
      {"float32", {kDLFloat, 32, 1}}, {"float64", {kDLFloat, 64, 1}}, {"float16", {kDLFloat, 16, 1}},
      {"int8", {kDLInt, 8, 1}},       {"int16", {kDLInt, 16, 1}},     {"int32", {kDLInt, 32, 1}},
      {"int64", {kDLInt, 64, 1}},     {"uint8", {kDLUInt, 8, 1}},     {"bool", {kDLBool, 8, 1}}};
  auto it = known.find(name);
  if (it == known.end()) return false;
  *out = it->second;
  return true;
}

const char* this_arch() {
#if defined(__aarch64__)
  return "aarch64";
#elif defined(__x86_64__)
  return "x86_64";
#elif defined(__arm__)
  return "armv7";
#else
  return "unknown";
#endif
}

// The CPU features this process can use, named as edgekit's TargetCaps names them.
std::set<std::string> cpu_features() {
  std::set<std::string> have;
#if defined(__aarch64__) && defined(__linux__)
  // HWCAPs, which qemu-user emulates too (its /proc/cpuinfo is the host's)
  unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  if (hw & (1UL << 1)) have.insert("neon");
  if (hw & (1UL << 10)) have.insert("fullfp16");
  if (hw & (1UL << 20)) have.insert("dotprod");
  if (hw & (1UL << 22)) have.insert("sve");
  if (hw2 & (1UL << 1)) have.insert("sve2");
  if (hw2 & (1UL << 13)) have.insert("i8mm");
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
  // cpuid through GCC's builtin: right under qemu-x86_64 -cpu ... too (whose /proc/cpuinfo is the host's), and it
  // also checks that the OS saves the AVX-512 registers. Clang and older GCC reject some of these names, so they
  // read /proc/cpuinfo below.
#define EDGEKIT_CPU(name) \
  if (__builtin_cpu_supports(name)) have.insert(name);
  EDGEKIT_CPU("sse4.2") EDGEKIT_CPU("avx") EDGEKIT_CPU("avx2") EDGEKIT_CPU("fma") EDGEKIT_CPU("f16c") EDGEKIT_CPU("bmi")
  EDGEKIT_CPU("bmi2") EDGEKIT_CPU("popcnt") EDGEKIT_CPU("avx512f") EDGEKIT_CPU("avx512bw") EDGEKIT_CPU("avx512dq")
  EDGEKIT_CPU("avx512vl") EDGEKIT_CPU("avx512cd") EDGEKIT_CPU("avx512vnni") EDGEKIT_CPU("avx512vpopcntdq")
  EDGEKIT_CPU("avx512bitalg") EDGEKIT_CPU("avx512vbmi") EDGEKIT_CPU("avx512vbmi2") EDGEKIT_CPU("avx512bf16")
  EDGEKIT_CPU("avx512fp16") EDGEKIT_CPU("avxvnni")
#undef EDGEKIT_CPU
#else
  static const std::map<std::string, std::string> renamed = {
      {"sse4_2", "sse4.2"}, {"bmi1", "bmi"}, {"avx512_vnni", "avx512vnni"}, {"avx512_vpopcntdq", "avx512vpopcntdq"},
      {"avx512_bitalg", "avx512bitalg"}, {"avx512_vbmi2", "avx512vbmi2"}, {"avx512_bf16", "avx512bf16"},
      {"avx512_fp16", "avx512fp16"}, {"avx_vnni", "avxvnni"}};
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::string flag;
    while (words >> flag) have.insert(renamed.count(flag) ? renamed.at(flag) : flag);
    break;
  }
#endif
  return have;
}

// The dynamic loader hands back the library it already mapped for a path, so a bundle replaced in place (an
// over-the-air update, then edgekit_load again) would silently run the old model. A library that changed at a
// path this process loaded before is loaded through a private copy, removed once mapped.
ffi::Module load_library(const std::string& path) {
  static std::mutex lock;
  static std::map<std::string, std::string> first_mapped;  // real path -> "device inode mtime" loaded there first
  char* real = realpath(path.c_str(), nullptr);
  std::string key = real ? real : path;
  std::free(real);
  struct stat st {};
  if (stat(key.c_str(), &st) != 0) throw std::runtime_error("no such file");
  std::string identity = std::to_string(st.st_dev) + " " + std::to_string(st.st_ino) + " " + std::to_string(st.st_mtim.tv_sec) +
                         "." + std::to_string(st.st_mtim.tv_nsec);
  {
    std::lock_guard<std::mutex> guard(lock);
    if (first_mapped.emplace(key, identity).first->second == identity) return ffi::Module::LoadFromFile(key);
  }
  std::string dir = (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + std::string("/edgekit-lib-XXXXXX");
  if (mkdtemp(dir.data()) == nullptr) throw std::runtime_error("cannot create a directory for a copy of the changed library");
  std::string copy = dir + "/model.so";
  {
    std::ifstream src(key, std::ios::binary);
    std::ofstream dst(copy, std::ios::binary);
    dst << src.rdbuf();
    if (!src || !dst) {
      unlink(copy.c_str());
      rmdir(dir.c_str());
      throw std::runtime_error("cannot copy the changed library to " + copy);
    }
  }
  try {
    ffi::Module module = ffi::Module::LoadFromFile(copy);
    unlink(copy.c_str());  // the mapping stays valid
    rmdir(dir.c_str());
    return module;
  } catch (...) {
    unlink(copy.c_str());
    rmdir(dir.c_str());
    throw;
  }
}

}  // namespace

struct edgekit_model {
  std::string dir, target, arch;
  std::vector<TensorInfo> inputs, outputs;
  std::vector<ffi::Tensor> input_tensors, output_tensors;
  std::optional<ffi::Module> library, vm;  // Module has no empty state
  std::optional<ffi::Function> main;
};

static edgekit_status read_manifest(const std::string& dir, edgekit_model* m, std::vector<std::string>* requires_) {
  std::ifstream in(dir + "/edgekit.txt");
  if (!in) return fail(EDGEKIT_ERR_BUNDLE, dir + " is not an edgekit bundle (no edgekit.txt): create one with `edgekit package`");
  std::string line, kind;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    std::istringstream f(line);
    if (!(f >> kind)) continue;
    if (kind == "edgekit-bundle") continue;
    if (kind == "target") {
      f >> m->target >> m->arch;
    } else if (kind == "requires") {
      std::string feature;
      while (f >> feature) requires_->push_back(feature);
    } else if (kind == "input" || kind == "output") {
      TensorInfo t;
      int ndim = -1;
      f >> t.name >> t.dtype >> ndim;
      if (!f || ndim < 0 || !parse_dtype(t.dtype, &t.dl))
        return fail(EDGEKIT_ERR_BUNDLE, dir + "/edgekit.txt line " + std::to_string(lineno) + " is malformed");
      t.shape.resize(ndim);
      size_t count = 1;
      bool bad = false;
      for (auto& d : t.shape) {
        bad |= !(f >> d) || d < -1 || (d == -1 && kind == "input");
        t.dynamic |= d == -1;
        count *= d < 0 ? 0 : static_cast<size_t>(d);
      }
      if (bad) return fail(EDGEKIT_ERR_BUNDLE, dir + "/edgekit.txt line " + std::to_string(lineno) + " is malformed");
      t.nbytes = count * ((t.dl.bits + 7) / 8);
      (kind == "input" ? m->inputs : m->outputs).push_back(t);
    }
  }
  if (m->arch.empty() || m->inputs.empty() || m->outputs.empty())
    return fail(EDGEKIT_ERR_BUNDLE, dir + "/edgekit.txt lacks its target, inputs or outputs");
  return EDGEKIT_OK;
}

extern "C" {

edgekit_status edgekit_set_num_threads(int threads) {
  if (threads < 0) return fail(EDGEKIT_ERR_ARGUMENT, "threads must be >= 0");
  // TVM sizes its pool from TVM_NUM_THREADS when the pool starts, and on runtime.config_threadpool later
  if (threads > 0) setenv("TVM_NUM_THREADS", std::to_string(threads).c_str(), 1);
  try {
    if (auto config = ffi::Function::GetGlobal("runtime.config_threadpool")) (*config)(0, threads);
  } catch (const std::exception& e) {
    return fail(EDGEKIT_ERR_RUNTIME, std::string("setting threads failed: ") + e.what());
  }
  return EDGEKIT_OK;
}

edgekit_status edgekit_load(const char* bundle_dir, edgekit_model** out) {
  if (bundle_dir == nullptr || out == nullptr) return fail(EDGEKIT_ERR_ARGUMENT, "edgekit_load: null argument");
  *out = nullptr;
  auto* m = new edgekit_model();
  m->dir = bundle_dir;
  std::vector<std::string> needs;
  edgekit_status status = read_manifest(m->dir, m, &needs);
  if (status != EDGEKIT_OK) {
    delete m;
    return status;
  }
  if (m->arch != this_arch()) {
    std::string msg = "the bundle is built for " + m->arch + " (target " + m->target + "); this library runs " + this_arch();
    delete m;
    return fail(EDGEKIT_ERR_TARGET, msg);
  }
  std::set<std::string> have = cpu_features();
  std::string missing;
  for (const auto& f : needs)
    if (!have.count(f)) missing += (missing.empty() ? "" : ", ") + f;
  if (!missing.empty()) {
    delete m;
    return fail(EDGEKIT_ERR_TARGET, "this CPU lacks " + missing + ", which the bundle's target " + m->target + " needs");
  }
  // libtvm_runtime_extra (tvm.contrib.sort for TopK / NonMaxSuppression, tvm.contrib.random): bundles of models
  // that call it carry it; loaded here rather than linked, so that one libedgekit runs any bundle
  const std::string extra = m->dir + "/lib/libtvm_runtime_extra.so";
  if (access(extra.c_str(), R_OK) == 0 && dlopen(extra.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    std::string msg = "cannot load " + extra + ": " + std::string(dlerror()).substr(0, 300);
    delete m;
    return fail(EDGEKIT_ERR_BUNDLE, msg);
  }
  try {
    m->library = load_library(m->dir + "/model.so");
    m->vm = (*m->library)->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
    // device kDLCPU 0, pooled allocator (2), as relax.VirtualMachine(tvm.cpu()) does
    (*m->vm)->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2);
    m->main = (*m->vm)->GetFunction("main").value();
    for (const auto& t : m->inputs)
      m->input_tensors.push_back(ffi::Tensor::FromNDAlloc(AlignedAlloc(), ffi::Shape(t.shape), t.dl, DLDevice{kDLCPU, 0}));
  } catch (const std::exception& e) {
    std::string msg = "cannot load " + m->dir + "/model.so: " + std::string(e.what()).substr(0, 300);
    delete m;
    return fail(EDGEKIT_ERR_BUNDLE, msg);
  }
  *out = m;
  return EDGEKIT_OK;
}

void edgekit_free(edgekit_model* model) { delete model; }

int edgekit_num_inputs(const edgekit_model* m) { return m ? static_cast<int>(m->inputs.size()) : 0; }
int edgekit_num_outputs(const edgekit_model* m) { return m ? static_cast<int>(m->outputs.size()) : 0; }

static const TensorInfo* info(const edgekit_model* m, int output, int i) {
  if (m == nullptr) return (fail(EDGEKIT_ERR_ARGUMENT, "null model"), nullptr);
  const auto& list = output ? m->outputs : m->inputs;
  if (i < 0 || i >= static_cast<int>(list.size()))
    return (fail(EDGEKIT_ERR_ARGUMENT, std::string(output ? "output" : "input") + " index " + std::to_string(i) + " out of range"), nullptr);
  return &list[i];
}

const char* edgekit_name(const edgekit_model* m, int output, int i) {
  const TensorInfo* t = info(m, output, i);
  return t ? t->name.c_str() : nullptr;
}
const char* edgekit_dtype(const edgekit_model* m, int output, int i) {
  const TensorInfo* t = info(m, output, i);
  return t ? t->dtype.c_str() : nullptr;
}
int edgekit_ndim(const edgekit_model* m, int output, int i) {
  const TensorInfo* t = info(m, output, i);
  return t ? static_cast<int>(t->shape.size()) : -1;
}
const int64_t* edgekit_shape(const edgekit_model* m, int output, int i) {
  const TensorInfo* t = info(m, output, i);
  return t ? t->shape.data() : nullptr;
}
size_t edgekit_nbytes(const edgekit_model* m, int output, int i) {
  const TensorInfo* t = info(m, output, i);
  return t ? t->nbytes : 0;
}
int edgekit_input_index(const edgekit_model* m, const char* name) {
  if (m == nullptr || name == nullptr) return -1;
  for (size_t i = 0; i < m->inputs.size(); ++i)
    if (m->inputs[i].name == name) return static_cast<int>(i);
  return -1;
}

edgekit_status edgekit_set_input(edgekit_model* m, int i, const void* data, size_t nbytes) {
  const TensorInfo* t = info(m, 0, i);
  if (t == nullptr) return EDGEKIT_ERR_ARGUMENT;
  if (data == nullptr) return fail(EDGEKIT_ERR_ARGUMENT, "edgekit_set_input: null data");
  if (nbytes != t->nbytes)
    return fail(EDGEKIT_ERR_SIZE, "input '" + t->name + "' takes " + std::to_string(t->nbytes) + " bytes, got " + std::to_string(nbytes));
  std::memcpy(m->input_tensors[i].data_ptr(), data, nbytes);
  return EDGEKIT_OK;
}

edgekit_status edgekit_run(edgekit_model* m) {
  if (m == nullptr) return fail(EDGEKIT_ERR_ARGUMENT, "null model");
  try {
    std::vector<ffi::AnyView> args(m->input_tensors.begin(), m->input_tensors.end());
    ffi::Any result;
    m->main->CallPacked(args.data(), static_cast<int>(args.size()), &result);
    m->output_tensors.clear();
    if (auto single = result.as<ffi::Tensor>()) {
      m->output_tensors.push_back(*single);
    } else {
      for (const ffi::Any& item : result.cast<ffi::Array<ffi::Any>>()) m->output_tensors.push_back(item.cast<ffi::Tensor>());
    }
  } catch (const std::exception& e) {
    return fail(EDGEKIT_ERR_RUNTIME, std::string("run failed: ") + std::string(e.what()).substr(0, 300));
  }
  if (m->output_tensors.size() != m->outputs.size())
    return fail(EDGEKIT_ERR_RUNTIME, "the model returned " + std::to_string(m->output_tensors.size()) + " outputs, the manifest lists " +
                                         std::to_string(m->outputs.size()));
  for (size_t i = 0; i < m->outputs.size(); ++i) {  // data-dependent outputs take this run's shape
    TensorInfo& t = m->outputs[i];
    const DLTensor* got = m->output_tensors[i].GetDLTensorPtr();
    if (!t.dynamic) continue;
    if (got->ndim != static_cast<int>(t.shape.size()))
      return fail(EDGEKIT_ERR_RUNTIME, "output '" + t.name + "' has " + std::to_string(got->ndim) + " dims, the manifest " + std::to_string(t.shape.size()));
    t.shape.assign(got->shape, got->shape + got->ndim);
    t.nbytes = ffi::GetDataSize(*got);
  }
  return EDGEKIT_OK;
}

const void* edgekit_output_data(const edgekit_model* m, int i) {
  if (info(m, 1, i) == nullptr) return nullptr;
  if (i >= static_cast<int>(m->output_tensors.size())) return (fail(EDGEKIT_ERR_ARGUMENT, "no output yet: call edgekit_run first"), nullptr);
  const DLTensor* t = m->output_tensors[i].GetDLTensorPtr();
  return static_cast<const char*>(t->data) + t->byte_offset;
}

edgekit_status edgekit_get_output(const edgekit_model* m, int i, void* data, size_t nbytes) {
  const TensorInfo* t = info(m, 1, i);
  if (t == nullptr) return EDGEKIT_ERR_ARGUMENT;
  if (data == nullptr) return fail(EDGEKIT_ERR_ARGUMENT, "edgekit_get_output: null buffer");
  if (nbytes != t->nbytes)
    return fail(EDGEKIT_ERR_SIZE, "output '" + t->name + "' has " + std::to_string(t->nbytes) + " bytes, the buffer " + std::to_string(nbytes));
  const void* src = edgekit_output_data(m, i);
  if (src == nullptr) return EDGEKIT_ERR_ARGUMENT;
  std::memcpy(data, src, nbytes);
  return EDGEKIT_OK;
}

const char* edgekit_target(const edgekit_model* m) { return m ? m->target.c_str() : nullptr; }
const char* edgekit_last_error(void) { return last_error.c_str(); }

}  // extern "C"
