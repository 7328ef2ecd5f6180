// Worked examples of the normalisation layers: two documented, deterministic inputs and what
// LRN (across channels and 2D) and batch norm (2D and 1D) make of them, in float64.
// Reproduce in numpy from the formulas below (tests/model/norm_examples_ref.py does).
//
// Inputs (n, c, h, w zero-based, angles in radians), both float64:
//   example 1: x[n,c,h,w] = sin(0.1*(n+1) + 0.37*c + 0.05*h*w),             shape [10, 3, 10, 10]
//   example 2: x[n,c,h,w] = (c+1) * cos(0.3*n - 0.2*c + 0.1*h) + 0.05*w,    shape [10, 4, 10, 10]
// Ops on each input:
//   lrn    across channels, k=1, alpha=0.01, beta=0.5, n=2 (channel c sums channels c-1..c+1,
//          clipped; alpha not divided by n): y = x / (1 + 0.01 * sum x^2)^0.5
//   lrn2d  within each channel, same k, alpha, beta, n: the sum runs over the clipped 3x3 window
//   bn2d   batch norm per channel over (n, h, w), gamma 1, beta 0, eps 1e-5, batch mean and biased
//          variance (training mode): y = (x - mean) / sqrt(var + eps)
//   bn1d   the same per feature over n, on x viewed as [10, C*100] (feature c*100 + h*10 + w)
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/layers.h"

namespace alexnet {

// The input of example 1 or 2 (see above): [10, C, 10, 10] float64 with C = 3 or 4.
Tensor norm_example_input(int example);
// The formula of example 1 or 2, as text.
std::string norm_example_formula(int example);

// k = 1, alpha = 0.01, beta = 0.5, n = 2.
LrnParams norm_example_lrn_params();
// eps = 1e-5 (momentum only touches the running statistics, which the examples do not report).
BatchNormParams norm_example_bn_params();

struct NormExampleResult {
  int example = 0;
  Tensor x;      // [10, C, 10, 10] float64
  Tensor lrn;    // like x
  Tensor lrn2d;  // like x
  Tensor bn2d;   // like x
  Tensor bn1d;   // [10, C*100]
};

// Runs the four ops on example 1 or 2.
NormExampleResult run_norm_example(int example);
// Examples 1 and 2, in order.
std::vector<NormExampleResult> run_norm_examples();

// For each example and op: the output shape, sum, sum of squares, min and max, and the elements
// y[0, c, 0, 0..2], y[4, c, 5, 3..5] and y[9, c, 9, 7..9] for every c (bn1d: the same elements
// of its flat view).
void print_norm_examples(std::ostream& os);

}  // namespace alexnet
