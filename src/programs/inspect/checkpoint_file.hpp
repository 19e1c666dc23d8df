#pragma once
// A checkpoint opened for inspection: the file is checked to be an upcycle checkpoint
// (include/upcycle/train/checkpoint.hpp) of the version this build reads, and its root attributes
// and dataset list are read. Tensors are read one at a time by the views, never all at once.
#include <cstdint>
#include <string>
#include <vector>

#include "upcycle/io/hdf5.hpp"

namespace upcycle::inspect {

struct InspectedCheckpoint {
  std::string path;
  h5::File file;
  std::string stage;
  std::int64_t version = 0;
  std::int64_t step = 0;
  std::vector<std::string> datasets;  // every dataset of the file, absolute paths, sorted
};

// Throws Error naming the file, in one line, for a missing file, a directory, a file that is not
// HDF5, an HDF5 file that is not an upcycle checkpoint (root attribute 'format'), another checkpoint
// version, or missing root attributes 'stage' / 'step'.
InspectedCheckpoint open_inspected_checkpoint(const std::string& path);

// Whether `datasets` (sorted) holds `path`.
bool contains_dataset(const std::vector<std::string>& datasets, const std::string& path);

}  // namespace upcycle::inspect
