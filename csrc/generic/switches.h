// Run-time switches: the UINFO_FAST_* environment variables that pick between paths of one
// semantics, so that tests and benchmarks can hold the paths together.
//
// One rule for all of them: a boolean switch takes exactly "0" or "1", a named one takes one of
// its listed values, and unset or empty means the default. Anything else raises a ValueError
// that names the variable and its values, on every device: a misspelt value fails on a CPU run
// too instead of silently meaning the default. Every op reads the switches once, at its entry,
// and passes them down; nothing below an op entry reads the environment.
#pragma once

namespace uinfo_fast {

struct Switches {
  bool generic_lbfgs = false;  // UINFO_FAST_GENERIC_LBFGS: the ATen L-BFGS update, not the device's fused one
  bool no_avx2 = false;        // UINFO_FAST_NO_AVX2: the scalar float32 CPU softmax, not the AVX2 one
  bool cuda_graphs = false;    // UINFO_FAST_CUDA_GRAPHS: blocks of fused CUDA iterations as CUDA graphs
  enum class Pass { fused, chunked };
  Pass pass = Pass::fused;     // UINFO_FAST_PASS=fused|chunked: the CUDA pass (the CPU has only chunks)
};

// Reads and validates every run-time UINFO_FAST_* variable.
Switches read_switches();

}  // namespace uinfo_fast
