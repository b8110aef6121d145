// exp/log/log1p/sqrt with the float overloads picked explicitly, for the per-element math in
// csrc/<family>.h: an unqualified exp(float) widens to double on the host but not on the device,
// so naming the float function makes host and device round alike.
#pragma once

#include <math.h>

#include "host_device.h"

namespace gmcore {
namespace math {

GM_HOST_DEVICE inline float gm_exp(float x) { return expf(x); }
GM_HOST_DEVICE inline double gm_exp(double x) { return exp(x); }
GM_HOST_DEVICE inline float gm_log(float x) { return logf(x); }
GM_HOST_DEVICE inline double gm_log(double x) { return log(x); }
GM_HOST_DEVICE inline float gm_log1p(float x) { return log1pf(x); }
GM_HOST_DEVICE inline double gm_log1p(double x) { return log1p(x); }
GM_HOST_DEVICE inline float gm_sqrt(float x) { return sqrtf(x); }
GM_HOST_DEVICE inline double gm_sqrt(double x) { return sqrt(x); }

}  // namespace math
}  // namespace gmcore
