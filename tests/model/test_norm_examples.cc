// The normalisation worked examples against an independent numpy reference
// (tests/model/norm_examples_ref.py, run with the Python that CMake names), every element.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "model/norm_examples.h"

#ifndef ALEXNET_NUMPY_PYTHON
#error "ALEXNET_NUMPY_PYTHON (a Python interpreter with numpy) must be defined by CMake"
#endif
#ifndef ALEXNET_NORM_EXAMPLES_REF
#error "ALEXNET_NORM_EXAMPLES_REF (path of norm_examples_ref.py) must be defined by CMake"
#endif

namespace alexnet {
namespace {

namespace fs = std::filesystem;

struct RefArray {
  Shape shape;
  std::vector<double> values;
};

std::string read_all(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs the numpy reference and parses its output: (example, op) -> array. Fails the test with
// the script's own message when Python, numpy or a self-check is missing or wrong.
std::map<std::pair<int, std::string>, RefArray> run_reference() {
  const fs::path python = ALEXNET_NUMPY_PYTHON;
  const fs::path script = ALEXNET_NORM_EXAMPLES_REF;
  std::map<std::pair<int, std::string>, RefArray> result;
  if (!fs::exists(python)) {
    ADD_FAILURE() << "the numpy reference needs " << python
                  << ", which does not exist (configure with -DALEXNET_NUMPY_PYTHON=...)";
    return result;
  }
  if (!fs::exists(script)) {
    ADD_FAILURE() << "reference script " << script << " not found";
    return result;
  }
  const fs::path dir =
      fs::temp_directory_path() / ("alexnet_norm_examples_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const fs::path out = dir / "ref.txt", err = dir / "stderr.txt";
  const std::string cmd = "'" + python.string() + "' '" + script.string() + "' '" + out.string() +
                          "' 2> '" + err.string() + "'";
  const int status = std::system(cmd.c_str());
  if (status != 0) {
    ADD_FAILURE() << "numpy reference failed (status " << status << "): " << cmd << "\n"
                  << read_all(err);
    fs::remove_all(dir);
    return result;
  }
  std::ifstream in(out);
  std::string word, op;
  int example = 0, ndim = 0;
  while (in >> word) {
    if (word != "example" || !(in >> example >> word >> op >> word >> ndim)) {
      ADD_FAILURE() << "malformed reference file " << out << " near '" << word << "'";
      break;
    }
    RefArray a;
    a.shape.resize(ndim);
    for (int64_t& d : a.shape) in >> d;
    a.values.resize(static_cast<size_t>(shape_numel(a.shape)));
    for (double& v : a.values) in >> v;
    if (!in) {
      ADD_FAILURE() << "truncated reference file " << out << " in example " << example << " op "
                    << op;
      break;
    }
    result[{example, op}] = std::move(a);
  }
  fs::remove_all(dir);
  return result;
}

TEST(NormExamples, MatchNumpyReferenceEveryElement) {
  const auto ref = run_reference();
  ASSERT_FALSE(ref.empty());
  ASSERT_EQ(ref.size(), 10u) << "expected 5 arrays for each of 2 examples";
  for (const NormExampleResult& r : run_norm_examples()) {
    const std::pair<const char*, const Tensor*> ops[] = {{"input", &r.x},
                                                         {"lrn", &r.lrn},
                                                         {"lrn2d", &r.lrn2d},
                                                         {"bn2d", &r.bn2d},
                                                         {"bn1d", &r.bn1d}};
    for (const auto& [name, t] : ops) {
      SCOPED_TRACE(str_cat("example ", r.example, " op ", name));
      auto it = ref.find({r.example, name});
      ASSERT_NE(it, ref.end());
      ASSERT_EQ(t->shape(), it->second.shape);
      ASSERT_EQ(t->dtype(), DType::kF64);
      const double* p = t->data<double>();
      double worst = 0;
      int64_t worst_i = 0;
      for (int64_t i = 0; i < t->numel(); ++i) {
        const double e = std::fabs(p[i] - it->second.values[static_cast<size_t>(i)]);
        if (!(e <= worst)) {
          worst = e;
          worst_i = i;
        }
      }
      EXPECT_LT(worst, 1e-12) << "element " << worst_i << ": ours " << p[worst_i] << " numpy "
                              << it->second.values[static_cast<size_t>(worst_i)];
    }
  }
}

TEST(NormExamples, ShapesAndPrintout) {
  NormExampleResult r1 = run_norm_example(1), r2 = run_norm_example(2);
  EXPECT_EQ(r1.x.shape(), (Shape{10, 3, 10, 10}));
  EXPECT_EQ(r2.x.shape(), (Shape{10, 4, 10, 10}));
  EXPECT_EQ(r1.bn1d.shape(), (Shape{10, 300}));
  EXPECT_EQ(r2.bn1d.shape(), (Shape{10, 400}));
  // The documented formula, element by element.
  EXPECT_DOUBLE_EQ(r1.x.data<double>()[((1 * 3 + 2) * 10 + 3) * 10 + 4],
                   std::sin(0.2 + 0.74 + 0.6));
  EXPECT_DOUBLE_EQ(r2.x.data<double>()[((2 * 4 + 3) * 10 + 4) * 10 + 5],
                   4 * std::cos(0.6 - 0.6 + 0.4) + 0.25);
  EXPECT_THROW(run_norm_example(3), Error);
  std::ostringstream os;
  print_norm_examples(os);
  const std::string text = os.str();
  for (const char* want :
       {"Example 1", "Example 2", "[10, 3, 10, 10]", "[10, 4, 10, 10]", "[10, 300]", "[10, 400]",
        "lrn2d", "bn1d", "sum of squares", "sin(0.1*(n+1) + 0.37*c + 0.05*h*w)"})
    EXPECT_NE(text.find(want), std::string::npos) << "missing '" << want << "' in:\n" << text;
}

}  // namespace
}  // namespace alexnet
