#pragma once
// Every differentiable op.
#include "upcycle/ops/activation.hpp"
#include "upcycle/ops/attention.hpp"
#include "upcycle/ops/elementwise.hpp"
#include "upcycle/ops/index.hpp"
#include "upcycle/ops/linalg.hpp"
#include "upcycle/ops/loss.hpp"
#include "upcycle/ops/norm.hpp"
#include "upcycle/ops/random.hpp"
#include "upcycle/ops/reduce.hpp"
#include "upcycle/ops/shape.hpp"
#include "upcycle/ops/softmax.hpp"
#include "upcycle/ops/topk.hpp"
