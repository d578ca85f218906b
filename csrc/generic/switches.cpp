// The only place that reads the environment (see switches.h for the rule).
#include "switches.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

namespace uinfo_fast {
namespace {

// Unset and empty alike mean "use the default", so `UINFO_FAST_X= cmd` resets a switch.
const char* value_of(const char* name) {
  const char* v = std::getenv(name);
  return (v == nullptr || *v == '\0') ? nullptr : v;
}

bool boolean_switch(const char* name) {
  const char* v = value_of(name);
  if (v == nullptr) return false;
  const std::string s(v);
  TORCH_CHECK_VALUE(s == "0" || s == "1", "uinfo_fast: ", name, " must be '0' or '1' (unset or empty: 0), got '",
                    s, "'");
  return s == "1";
}

Switches::Pass pass_switch(const char* name) {
  const char* v = value_of(name);
  if (v == nullptr) return Switches::Pass::fused;
  const std::string s(v);
  TORCH_CHECK_VALUE(s == "fused" || s == "chunked", "uinfo_fast: ", name,
                    " must be 'fused' or 'chunked' (unset or empty: fused), got '", s, "'");
  return s == "fused" ? Switches::Pass::fused : Switches::Pass::chunked;
}

}  // namespace

Switches read_switches() {
  Switches sw;
  sw.generic_lbfgs = boolean_switch("UINFO_FAST_GENERIC_LBFGS");
  sw.no_avx2 = boolean_switch("UINFO_FAST_NO_AVX2");
  sw.cuda_graphs = boolean_switch("UINFO_FAST_CUDA_GRAPHS");
  sw.pass = pass_switch("UINFO_FAST_PASS");
  return sw;
}

}  // namespace uinfo_fast
