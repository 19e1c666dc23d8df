#include "upcycle/data/text_corpus.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "upcycle/core/error.hpp"
#include "upcycle/core/rng.hpp"

namespace upcycle {

namespace fs = std::filesystem;

namespace {
bool is_text_file(const fs::path& p) {
  const std::string ext = p.extension().string();
  return fs::is_regular_file(p) && ext != ".dat" && ext != ".u8";
}

std::vector<fs::path> expand(const std::vector<std::string>& paths) {
  std::vector<fs::path> files;
  for (const auto& s : paths) {
    const fs::path p(s);
    if (!fs::exists(p))
      UPCYCLE_THROW(s, ": no such file or directory",
                    s.rfind(kFortunesDir, 0) == 0 ? " (the default text comes from the Debian package fortunes)" : "");
    if (fs::is_directory(p)) {
      std::vector<fs::path> in_dir;
      for (const auto& e : fs::directory_iterator(p))
        if (is_text_file(e.path())) in_dir.push_back(e.path());
      std::sort(in_dir.begin(), in_dir.end());
      files.insert(files.end(), in_dir.begin(), in_dir.end());
    } else {
      files.push_back(p);
    }
  }
  UPCYCLE_CHECK(!files.empty(), "no text files found in the given paths");
  return files;
}

// Splits file contents into documents at lines consisting of a single '%'.
template <class F>
void for_each_document(const std::string& text, F&& emit) {
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t sep = text.find("\n%\n", start);
    const bool at_begin = text.compare(start, 2, "%\n") == 0;
    if (at_begin) {
      start += 2;
      continue;
    }
    const std::size_t end = sep == std::string::npos ? text.size() : sep;
    if (end > start) emit(text.substr(start, end - start));
    if (sep == std::string::npos) break;
    start = sep + 3;
  }
}
}  // namespace

TextCorpus load_text_corpus(const std::vector<std::string>& paths, double val_fraction, std::uint64_t seed) {
  UPCYCLE_CHECK(val_fraction >= 0.0 && val_fraction < 1.0, "val_fraction must be in [0, 1), got ", val_fraction);
  TextCorpus c;
  std::uint64_t doc = 0;
  for (const auto& file : expand(paths)) {
    std::ifstream in(file, std::ios::binary);
    UPCYCLE_CHECK(in, file.string(), ": cannot open");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for_each_document(text, [&](const std::string& d) {
      const bool to_val = Philox4x32::uniform(seed, doc++) < val_fraction;
      auto& dst = to_val ? c.val : c.train;
      dst.insert(dst.end(), d.begin(), d.end());
      dst.push_back('\n');
      ++(to_val ? c.val_docs : c.train_docs);
    });
  }
  UPCYCLE_CHECK(!c.train.empty(), "the text corpus has no training documents");
  UPCYCLE_CHECK(val_fraction == 0.0 || !c.val.empty(),
                "the text corpus has no validation documents (val_fraction ", val_fraction, ", ", doc, " documents)");
  return c;
}

}  // namespace upcycle
