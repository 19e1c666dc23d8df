#pragma once
// Byte-level text: files or directories of text, split into documents, documents assigned to
// train or validation deterministically from the seed.
#include <cstdint>
#include <string>
#include <vector>

namespace upcycle {

inline constexpr const char* kFortunesDir = "/usr/share/games/fortunes";

struct TextCorpus {
  std::vector<std::uint8_t> train, val;  // documents joined by '\n'
  std::int64_t train_docs = 0, val_docs = 0;
};

// paths: files, or directories whose regular files are read in name order (fortune index files
// *.dat and the *.u8 copies are skipped). A document ends at a line holding only '%' (the
// fortune format) or at the end of a file. Document i goes to validation when
// Philox-uniform(seed, i) < val_fraction. Errors name the missing path and the package.
TextCorpus load_text_corpus(const std::vector<std::string>& paths, double val_fraction, std::uint64_t seed);

}  // namespace upcycle
