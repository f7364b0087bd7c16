// Whether the AMX path of q8_matmul runs (amx.h): the kernel's grant, asked
// once per process, and the run-time switch, with the ops levant::amx_available() and
// levant::set_amx(on) -> the previous setting, and levant::amx_matmuls(), the count of
// matmuls that took an AMX path.

#include "amx.h"

#include <torch/library.h>

namespace levant_kernels {

namespace {

bool ask_kernel() {
#ifdef LEVANT_AMX
  constexpr long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
  return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
  return false;
#endif
}

std::atomic<bool>& switch_() {
  static std::atomic<bool> on{[] {
    const char* env = std::getenv("LEVANT_AMX");
    return amx_granted() && !(env != nullptr && std::strcmp(env, "0") == 0);
  }()};
  return on;
}

std::atomic<int64_t> amx_matmuls{0};

}  // namespace

bool amx_granted() {
  static const bool granted = ask_kernel();
  return granted;
}

bool amx_on() { return switch_().load(std::memory_order_relaxed); }

bool set_amx_on(bool on) { return switch_().exchange(on && amx_granted()); }

void count_amx_matmul() { amx_matmuls.fetch_add(1, std::memory_order_relaxed); }

}  // namespace levant_kernels

TORCH_LIBRARY_FRAGMENT(levant, m) {
  m.def("amx_available() -> bool", [] { return levant_kernels::amx_granted(); });
  m.def("set_amx(bool on) -> bool", [](bool on) { return levant_kernels::set_amx_on(on); });
  m.def("amx_matmuls() -> int",
        [] { return levant_kernels::amx_matmuls.load(std::memory_order_relaxed); });
}
