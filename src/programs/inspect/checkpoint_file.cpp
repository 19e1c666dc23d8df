#include "checkpoint_file.hpp"

#include <algorithm>
#include <filesystem>

#include "upcycle/core/error.hpp"
#include "upcycle/train/checkpoint.hpp"

namespace upcycle::inspect {

namespace fs = std::filesystem;

InspectedCheckpoint open_inspected_checkpoint(const std::string& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (!fs::exists(status)) UPCYCLE_THROW(path, ": no such file");
  if (fs::is_directory(status)) UPCYCLE_THROW(path, ": is a directory, not a checkpoint file");
  InspectedCheckpoint c;
  c.path = path;
  c.file = h5::File::open(path);  // names the file when it is unreadable or not HDF5
  if (!h5::has_attribute(c.file, "/", "format"))
    UPCYCLE_THROW(path, ": not an upcycle checkpoint (an HDF5 file without the root attribute 'format' = '",
                  kCheckpointFormat, "')");
  const std::string format = h5::read_string_attribute(c.file, "/", "format");
  if (format != kCheckpointFormat)
    UPCYCLE_THROW(path, ": not an upcycle checkpoint (root attribute 'format' is '", format, "', expected '",
                  kCheckpointFormat, "')");
  c.version = h5::read_int_attribute(c.file, "/", "version");
  if (c.version != kCheckpointVersion)
    UPCYCLE_THROW(path, ": checkpoint version ", c.version, "; this build reads version ", kCheckpointVersion);
  for (const char* attr : {"stage", "step"})
    if (!h5::has_attribute(c.file, "/", attr))
      UPCYCLE_THROW(path, ": the root attribute '", attr, "' is missing (upcycle_inspect --verify lists what else is)");
  c.stage = h5::read_string_attribute(c.file, "/", "stage");
  c.step = h5::read_int_attribute(c.file, "/", "step");
  c.datasets = h5::list_datasets(c.file);
  return c;
}

bool contains_dataset(const std::vector<std::string>& datasets, const std::string& path) {
  return std::binary_search(datasets.begin(), datasets.end(), path);
}

}  // namespace upcycle::inspect
