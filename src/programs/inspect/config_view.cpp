// upcycle_inspect CKPT --config: the INI text the checkpoint was written with, as stored.
#include "checkpoint_file.hpp"
#include "json.hpp"
#include "upcycle/core/error.hpp"
#include "views.hpp"

namespace upcycle::inspect {

void config_view(const std::string& path, bool json, std::ostream& out) {
  const InspectedCheckpoint c = open_inspected_checkpoint(path);
  if (!h5::has_attribute(c.file, "/", "config")) UPCYCLE_THROW(path, ": the root attribute 'config' is missing");
  const std::string ini = h5::read_string_attribute(c.file, "/", "config");
  if (json)
    out << Json().add("file", path).add("config", ini).str() << "\n";
  else
    out << ini << (ini.empty() || ini.back() == '\n' ? "" : "\n");
}

}  // namespace upcycle::inspect
