// upcycle_inspect --verify CKPT: upcycle::check_checkpoint, the same check the library applies,
// with its problems printed one per line.
#include "json.hpp"
#include "upcycle/train/checkpoint.hpp"
#include "views.hpp"

namespace upcycle::inspect {

bool verify_view(const std::string& path, bool json, std::ostream& out) {
  const CheckpointCheck check = check_checkpoint(path);
  if (json) {
    out << Json()
               .add("file", path)
               .add("ok", check.ok)
               .add("datasets_checked", check.datasets_checked)
               .add_raw("problems", json_string_array(check.problems))
               .str()
        << "\n";
    return check.ok;
  }
  if (check.ok) {
    out << "ok: " << path << ": " << check.datasets_checked << " datasets read back intact\n";
    return true;
  }
  out << "FAILED: " << path << ": " << check.problems.size() << " problem" << (check.problems.size() == 1 ? "" : "s")
      << " (" << check.datasets_checked << " datasets read back intact)\n";
  for (const auto& p : check.problems) out << "  " << p << "\n";
  return false;
}

}  // namespace upcycle::inspect
