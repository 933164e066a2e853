// edgekit_example: run a bundle on an .npy input and print the top class and the latency.
//
//   edgekit_example BUNDLE [input.npy] [--repeat N] [--warmup N] [--threads T] [--inputs DIR] [--outputs DIR]
//
// input.npy holds either exactly the model's first input, or K samples of it stacked on the batch axis
// (shape [K·N, ...]): then one line "sample <k> class <c>" per sample. Without input.npy the bundle's
// sample input (sample/input_0.npy) is used. --inputs DIR reads every input from DIR/input_<i>.npy (models
// with several inputs); --outputs DIR writes DIR/output_<i>.npy after the last call. Prints a JSON line last.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "edgekit.hpp"

struct Npy {
  std::string dtype;  // numpy descr, e.g. "<f4"
  std::vector<int64_t> shape;
  std::vector<char> data;
};

// A minimal .npy reader (format 1.0 / 2.0, little-endian, C order): enough for arrays numpy.save writes.
static Npy read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  char magic[8];
  in.read(magic, 8);
  if (!in || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + " is not an .npy file");
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    uint16_t len16;
    in.read(reinterpret_cast<char*>(&len16), 2);
    header_len = len16;
  } else {
    in.read(reinterpret_cast<char*>(&header_len), 4);
  }
  std::string header(header_len, ' ');
  in.read(&header[0], header_len);
  if (header.find("'fortran_order': True") != std::string::npos) throw std::runtime_error(path + ": Fortran order is not supported");
  Npy npy;
  size_t d = header.find("'descr':");
  size_t q1 = header.find('\'', d + 8), q2 = header.find('\'', q1 + 1);
  npy.dtype = header.substr(q1 + 1, q2 - q1 - 1);
  size_t s = header.find('(', header.find("'shape':")), e = header.find(')', s);
  std::stringstream dims(header.substr(s + 1, e - s - 1));
  std::string item;
  while (std::getline(dims, item, ','))
    if (item.find_first_not_of(' ') != std::string::npos) npy.shape.push_back(std::stoll(item));
  npy.data.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return npy;
}

static std::string npy_descr(const std::string& dtype) {
  if (dtype == "float32") return "<f4";
  if (dtype == "int64") return "<i8";
  if (dtype == "int32") return "<i4";
  if (dtype == "uint8") return "|u1";
  if (dtype == "int8") return "|i1";
  return dtype;
}

static void write_npy(const std::string& path, const std::string& dtype, const std::vector<int64_t>& shape, const void* data, size_t nbytes) {
  std::string dims;
  for (int64_t d : shape) dims += std::to_string(d) + ",";
  if (shape.size() > 1) dims.pop_back();
  std::string header = "{'descr': '" + npy_descr(dtype) + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ');  // total header a multiple of 64 bytes, ending in '\n'
  header += "\n";
  std::ofstream out(path, std::ios::binary);
  uint16_t len = static_cast<uint16_t>(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.write(reinterpret_cast<const char*>(&len), 2);
  out << header;
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(nbytes));
  if (!out) throw std::runtime_error("cannot write " + path);
}

static double peak_rss_mb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atof(line.c_str() + 6) / 1024.0;
  return 0.0;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: edgekit_example BUNDLE [input.npy] [--repeat N] [--threads T]\n";
    return 2;
  }
  std::string bundle = argv[1], input, inputs_dir, outputs_dir;
  int repeat = 10, warmup = 1, threads = 0;
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--repeat" && i + 1 < argc) repeat = std::max(1, std::atoi(argv[++i]));
    else if (arg == "--warmup" && i + 1 < argc) warmup = std::max(0, std::atoi(argv[++i]));
    else if (arg == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (arg == "--inputs" && i + 1 < argc) inputs_dir = argv[++i];
    else if (arg == "--outputs" && i + 1 < argc) outputs_dir = argv[++i];
    else input = arg;
  }
  try {
    edgekit::Model model(bundle, threads);
    for (int i = 1; !inputs_dir.empty() && i < model.num_inputs(); ++i) {  // inputs after the first: as they are
      Npy extra = read_npy(inputs_dir + "/input_" + std::to_string(i) + ".npy");
      model.set_input(i, extra.data.data(), extra.data.size());
    }
    Npy npy = read_npy(!inputs_dir.empty() ? inputs_dir + "/input_0.npy" : input.empty() ? bundle + "/sample/input_0.npy" : input);
    if (npy.dtype != npy_descr(model.input_dtype(0)))
      throw std::runtime_error("the .npy holds " + npy.dtype + ", the model takes " + model.input_dtype(0));
    size_t per_call = model.input_nbytes(0);
    if (per_call == 0 || npy.data.size() % per_call != 0)
      throw std::runtime_error("the .npy has " + std::to_string(npy.data.size()) + " bytes, not a multiple of one input (" +
                               std::to_string(per_call) + ")");
    size_t calls = npy.data.size() / per_call;
    std::vector<double> times;
    size_t sample = 0;
    int top = -1;
    for (size_t c = 0; c < calls; ++c) {
      model.set_input(0, npy.data.data() + c * per_call, per_call);
      int rounds = calls == 1 ? repeat : 1;
      for (int w = 0; c == 0 && w < warmup; ++w) model.run();
      for (int r = 0; r < rounds; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        model.run();
        times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
      std::vector<int64_t> out_shape = model.output_shape(0);  // after the run: a data-dependent dim is known only then
      size_t classes = out_shape.empty() ? 1 : static_cast<size_t>(out_shape.back());
      if (model.output_dtype(0) != "float32" || classes == 0) continue;
      std::vector<float> out = model.output<float>(0);
      for (size_t row = 0; row + classes <= out.size(); row += classes, ++sample) {
        top = static_cast<int>(std::max_element(out.begin() + row, out.begin() + row + classes) - (out.begin() + row));
        if (calls > 1) std::printf("sample %zu class %d\n", sample, top);
      }
    }
    for (int i = 0; !outputs_dir.empty() && i < model.num_outputs(); ++i) {
      std::vector<char> bytes = model.output<char>(i);
      write_npy(outputs_dir + "/output_" + std::to_string(i) + ".npy", model.output_dtype(i), model.output_shape(i), bytes.data(), bytes.size());
    }
    std::string all;
    for (double t : times) all += (all.empty() ? "" : ", ") + std::to_string(t);
    std::sort(times.begin(), times.end());
    double p50 = times[times.size() / 2];
    if (calls == 1) std::printf("top class %d\n", top);
    std::printf("{\"target\": \"%s\", \"calls\": %zu, \"p50_ms\": %.4f, \"top_class\": %d, \"peak_rss_mb\": %.1f, \"times_ms\": [%s]}\n",
                model.target().c_str(), times.size(), p50, top, peak_rss_mb(), all.c_str());
  } catch (const edgekit::Error& e) {
    std::fprintf(stderr, "edgekit_example: %s (status %d)\n", e.what(), static_cast<int>(e.status));
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "edgekit_example: %s\n", e.what());
    return 1;
  }
  return 0;
}
