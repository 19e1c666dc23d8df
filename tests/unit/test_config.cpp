// The config system: schema defaults, INI files, command-line overrides, every kind of user error
// (with the message naming file, line, key and what is allowed), cross-key rules, the INI round
// trip, --help, and the command-line parser.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include "upcycle/core/error.hpp"
#include "upcycle/io/command_line.hpp"
#include "upcycle/io/config.hpp"

using namespace upcycle;
namespace fs = std::filesystem;

namespace {

// The message of the UsageError that `f` throws; fails the test if it throws nothing or another type.
std::string usage_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.message();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected UsageError, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected UsageError, nothing thrown";
  return "";
}

std::string parse_error(const std::string& ini, const std::vector<ConfigOverride>& overrides = {}) {
  return usage_error([&] { parse_config(ini, "bad.ini", overrides); });
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "missing '" << (needle) << "' in:\n" << (haystack)

// A fresh directory per test under GoogleTest's temporary directory.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::path(::testing::TempDir()) / (std::string("upcycle_config_") + info->test_suite_name() + "_" + info->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string write(const std::string& name, const std::string& text) const {
    const fs::path p = path_ / name;
    std::ofstream(p) << text;
    return p.string();
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

CommandLine parse_args(std::vector<const char*> args) {
  args.insert(args.begin(), "upcycle_train");
  return parse_command_line(static_cast<int>(args.size()), args.data());
}

}  // namespace

// ---- schema and defaults

TEST(ConfigSchema, NamesAreUniqueAndSectionsListed) {
  std::set<std::string> names, sections;
  for (const auto& s : config_sections()) sections.insert(s.name);
  for (const auto& k : config_schema()) {
    EXPECT_TRUE(names.insert(k.full_name()).second) << "duplicate " << k.full_name();
    EXPECT_TRUE(sections.count(k.section)) << k.full_name() << " has an unlisted section";
    EXPECT_NE(std::string(k.help), "") << k.full_name();
    const bool takes_allowed = k.type == ConfigType::Enum || k.type == ConfigType::StringList;
    if (k.type == ConfigType::Enum) {
      EXPECT_GE(k.allowed_values().size(), 2u) << k.full_name();
    }
    if (!takes_allowed) {
      EXPECT_EQ(k.allowed, nullptr) << k.full_name();
    }
    EXPECT_EQ(config_key_index(k.full_name()), static_cast<std::size_t>(&k - config_schema().data()));
  }
  for (const char* s : {"run", "model", "moe", "upcycle", "train", "data", "parallel", "eesd", "eval", "dpsl", "checkpoint", "log"}) {
    EXPECT_TRUE(sections.count(s)) << s;
  }
  EXPECT_EQ(config_key_index("train.nope"), kNoConfigKey);
}

TEST(ConfigSchema, DefaultsValidateAndFollowMethods) {
  const Config c = default_config();
  EXPECT_EQ(c, parse_config("", "empty.ini"));
  EXPECT_EQ(c.origin("train.steps"), "default");
  EXPECT_EQ(c.get_string_list("run.stages"), (std::vector<std::string>{"dense"}));
  EXPECT_EQ(c.get_string("moe.blocks"), "every_other");
  EXPECT_DOUBLE_EQ(c.get_float("moe.lb_weight"), 0.01);
  EXPECT_DOUBLE_EQ(c.get_float("moe.z_weight"), 0.001);
  EXPECT_DOUBLE_EQ(c.get_float("moe.aux_free_rate"), 0.0);
  EXPECT_EQ(c.get_int("upcycle.calib_tokens"), 65536);
  EXPECT_EQ(c.get_int("upcycle.kmeans_iters"), 25);
  EXPECT_DOUBLE_EQ(c.get_float("upcycle.tau"), 0.9);
  EXPECT_DOUBLE_EQ(c.get_float("upcycle.min_rank_frac"), 0.5);
  EXPECT_DOUBLE_EQ(c.get_float("upcycle.chol_eps"), 1e-5);
  EXPECT_DOUBLE_EQ(c.get_float("upcycle.drop_ratio"), 0.5);
  EXPECT_DOUBLE_EQ(c.get_float("upcycle.noise_std"), 0.0);
  EXPECT_DOUBLE_EQ(c.get_float("upcycle.router_scale"), 1.0);
  EXPECT_DOUBLE_EQ(c.get_float("eesd.weight"), 0.1);
  EXPECT_DOUBLE_EQ(c.get_float("eesd.ema"), 0.999);
  EXPECT_DOUBLE_EQ(c.get_float("dpsl.weight"), 0.01);
  EXPECT_DOUBLE_EQ(c.get_float("dpsl.alpha"), 1.0);
  EXPECT_FALSE(c.get_bool("eesd.enabled"));
  EXPECT_TRUE(c.get_int_list("moe.block_list").empty());
  EXPECT_EQ(c.get_int("parallel.expert_parallel"), 0);
}

// ---- values from a file and from overrides

TEST(ConfigValues, FileValuesOfEveryType) {
  const Config c = parse_config(
      "# a comment\n"
      "[model]\n"
      "width = 64   # inline comment\n"
      "heads = 8\n"
      "dropout = 0.25\n"
      "tie_embeddings = no\n"
      "ffn_activation = swiglu\n"
      "\n"
      "[moe]\r\n"
      "blocks = list\r\n"
      "block_list = 0, 2,5\r\n"
      "[dpsl]\n"
      "prior = asymmetric\n"
      "alphas = 0.5, 1, 2, 0.5, 1, 2, 0.5, 1\n"
      "[run]\n"
      "stages = upcycle,moe\n"
      "dir = /tmp/some run\n",
      "good.ini");
  EXPECT_EQ(c.get_int("model.width"), 64);
  EXPECT_EQ(c.get_int("model.heads"), 8);
  EXPECT_DOUBLE_EQ(c.get_float("model.dropout"), 0.25);
  EXPECT_FALSE(c.get_bool("model.tie_embeddings"));
  EXPECT_EQ(c.get_string("model.ffn_activation"), "swiglu");
  EXPECT_EQ(c.get_int_list("moe.block_list"), (std::vector<std::int64_t>{0, 2, 5}));
  EXPECT_EQ(c.get_float_list("dpsl.alphas").size(), 8u);
  EXPECT_DOUBLE_EQ(c.get_float_list("dpsl.alphas")[2], 2.0);
  EXPECT_EQ(c.get_string_list("run.stages"), (std::vector<std::string>{"upcycle", "moe"}));
  EXPECT_EQ(c.get_string("run.dir"), "/tmp/some run");
  EXPECT_EQ(c.origin("model.width"), "good.ini:3");
  EXPECT_EQ(c.origin("moe.block_list"), "good.ini:11");
  EXPECT_EQ(c.origin("model.depth"), "default");
}

TEST(ConfigValues, OverridesBeatTheFileAndTheLastOverrideWins) {
  TempDir dir;
  const std::string path = dir.write("run.ini", "[train]\nsteps = 10\nlr = 0.01\n[checkpoint]\nresume = latest\n");
  const Config c = load_config(path, {{"train.steps", "20"}, {"train.steps", "30"}, {"checkpoint.resume", ""}});
  EXPECT_EQ(c.get_int("train.steps"), 30);
  EXPECT_EQ(c.origin("train.steps"), "command line");
  EXPECT_DOUBLE_EQ(c.get_float("train.lr"), 0.01);
  EXPECT_EQ(c.origin("train.lr"), path + ":3");
  EXPECT_EQ(c.get_string("checkpoint.resume"), "");
}

TEST(ConfigValues, BooleanSpellings) {
  for (const char* t : {"true", "True", "yes", "on", "1"}) {
    EXPECT_TRUE(parse_config(std::string("[eesd]\nenabled = ") + t, "b.ini").get_bool("eesd.enabled")) << t;
  }
  for (const char* f : {"false", "FALSE", "no", "off", "0"}) {
    EXPECT_FALSE(parse_config(std::string("[data]\nshuffle = ") + f, "b.ini").get_bool("data.shuffle")) << f;
  }
}

// ---- programming errors: asking for a key the schema lacks, or with the wrong getter

TEST(ConfigGetters, UnknownKeyOrWrongTypeIsAProgrammingError) {
  const Config c = default_config();
  auto is_plain_error = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const UsageError&) {
      return false;
    } catch (const Error& e) {
      return std::string(e.what()).find("train.steps") != std::string::npos;
    }
    return false;
  };
  EXPECT_TRUE(is_plain_error([&] { c.get_int("train.stpes"); }));  // names the suggestion
  EXPECT_TRUE(is_plain_error([&] { c.get_float("train.steps"); }));
  EXPECT_TRUE(is_plain_error([&] { c.get_string("train.steps"); }));
  EXPECT_THROW(c.get_int("model.kind"), Error);
  EXPECT_THROW(c.get_string_list("moe.block_list"), Error);
  EXPECT_EQ(c.get_string("model.kind"), "vit");  // enums read as strings
}

// ---- user errors in the file

TEST(ConfigErrors, UnknownKeyNamesFileLineAndNearestKey) {
  const std::string m = parse_error("[train]\nlr = 0.01\nstpes = 5\n");
  EXPECT_CONTAINS(m, "bad.ini:3");
  EXPECT_CONTAINS(m, "unknown key 'train.stpes'");
  EXPECT_CONTAINS(m, "did you mean 'train.steps'?");
}

TEST(ConfigErrors, KeyUnderTheWrongSectionSuggestsItsSection) {
  const std::string m = parse_error("[train]\ntop_k = 2\n");
  EXPECT_CONTAINS(m, "bad.ini:2");
  EXPECT_CONTAINS(m, "did you mean 'moe.top_k'?");
}

TEST(ConfigErrors, UnknownSection) {
  EXPECT_CONTAINS(parse_error("[trian]\nsteps = 5\n"), "unknown section [trian]");
  EXPECT_CONTAINS(parse_error("[trian]\nsteps = 5\n"), "did you mean 'train.steps'?");
  EXPECT_CONTAINS(parse_error("[modle]\nzzz = 5\n"), "did you mean [model]?");
  EXPECT_CONTAINS(parse_error("[qqqqqq]\nzzz = 5\n"), "sections are: [run] [model]");
}

TEST(ConfigErrors, KeyBeforeAnySection) {
  const std::string m = parse_error("steps = 5\n[train]\n");
  EXPECT_CONTAINS(m, "bad.ini:1");
  EXPECT_CONTAINS(m, "key 'steps' has no [section]");
  EXPECT_CONTAINS(m, "did you mean 'train.steps'?");
}

TEST(ConfigErrors, UnknownKeyWithNoNearMatchListsTheSectionsKeys) {
  const std::string m = parse_error("[moe]\nzzzzzzzz = 1\n");
  EXPECT_CONTAINS(m, "unknown key 'moe.zzzzzzzz'");
  EXPECT_CONTAINS(m, "keys in [moe] are:");
  EXPECT_CONTAINS(m, " top_k ");
}

TEST(ConfigErrors, ValueOfTheWrongType) {
  EXPECT_CONTAINS(parse_error("[train]\nsteps = ten\n"), "bad.ini:2: bad value for train.steps: 'ten' is not an integer");
  EXPECT_CONTAINS(parse_error("[train]\nsteps = 1.5\n"), "'1.5' is not an integer");
  EXPECT_CONTAINS(parse_error("[train]\nsteps = 99999999999999999999\n"), "does not fit a 64-bit integer");
  EXPECT_CONTAINS(parse_error("[train]\nlr = fast\n"), "bad value for train.lr: 'fast' is not a number");
  EXPECT_CONTAINS(parse_error("[train]\nlr = inf\n"), "'inf' is not a finite number");
  EXPECT_CONTAINS(parse_error("[eesd]\nenabled = maybe\n"), "'maybe' is not a boolean (true/false");
  EXPECT_CONTAINS(parse_error("[moe]\nblock_list = 1, x\n"), "'x' is not an integer");
}

TEST(ConfigErrors, ValueOutOfRangeNamesTheAllowedRange) {
  const std::string m = parse_error("[train]\nlr = -1\n");
  EXPECT_CONTAINS(m, "bad.ini:2: bad value for train.lr: -1 is out of range (allowed: > 0)");
  EXPECT_CONTAINS(parse_error("[model]\ndropout = 1\n"), "model.dropout: 1 is out of range (allowed: in [0, 1))");
  EXPECT_CONTAINS(parse_error("[train]\nsteps = 0\n"), "(allowed: >= 1)");
  EXPECT_CONTAINS(parse_error("[moe]\nblocks = list\nblock_list = 1, -2\n"), "-2 is out of range (allowed: each >= 0)");
}

TEST(ConfigErrors, ValueNotInTheAllowedSetListsTheAllowedValues) {
  const std::string m = parse_error("[model]\nffn_activation = relu\n");
  EXPECT_CONTAINS(m, "bad.ini:2: bad value for model.ffn_activation: 'relu' is not one of: gelu, gelu_erf, swiglu");
  EXPECT_CONTAINS(parse_error("[model]\nffn_activation = gleu\n"), "(did you mean 'gelu'?)");
  const std::string l = parse_error("[run]\nstages = dense, finetune\n");
  EXPECT_CONTAINS(l, "bad value for run.stages: 'finetune' is not one of: dense, upcycle, moe, eval");
}

TEST(ConfigErrors, MalformedListsAndEmptyValues) {
  EXPECT_CONTAINS(parse_error("[run]\nstages = dense,,moe\n"), "has an empty list element");
  EXPECT_CONTAINS(parse_error("[run]\nstages =\n"), "bad value for run.stages: the value must not be empty");
}

TEST(ConfigErrors, StringsThatCannotRoundTripThroughIni) {
  EXPECT_CONTAINS(parse_error("", {{"run.dir", "runs/a#b"}}), "contains '#'");
  EXPECT_CONTAINS(parse_error("", {{"run.dir", "a\nb"}}), "contains a line break");
}

TEST(ConfigErrors, KeySetTwiceInAFile) {
  const std::string m = parse_error("[train]\nsteps = 5\n\nsteps = 6\n");
  EXPECT_CONTAINS(m, "bad.ini:4: train.steps is set again (first set at bad.ini:2)");
}

TEST(ConfigErrors, EveryProblemIsReportedAtOnce) {
  const std::string m = parse_error("[train]\nstpes = 5\nlr = x\n[model]\nkind = cnn\n", {{"moe.topk", "1"}});
  EXPECT_CONTAINS(m, "bad.ini:2:");
  EXPECT_CONTAINS(m, "bad.ini:3:");
  EXPECT_CONTAINS(m, "bad.ini:5:");
  EXPECT_CONTAINS(m, "command line --moe.topk=1: unknown key 'moe.topk'; did you mean 'moe.top_k'?");
}

TEST(ConfigErrors, BadOverrideNamesTheCommandLine) {
  const std::string m = parse_error("", {{"train.lr", "-1"}});
  EXPECT_CONTAINS(m, "command line --train.lr=-1: bad value for train.lr: -1 is out of range (allowed: > 0)");
}

TEST(ConfigErrors, MalformedLineNamesFileAndLine) {
  const std::string m = parse_error("[train]\nsteps 5\n");
  EXPECT_CONTAINS(m, "bad.ini:2: malformed line 'steps 5'");
  EXPECT_CONTAINS(parse_error("# header\n[train\nsteps = 5\n"), "bad.ini:2: malformed line '[train'");
}

TEST(ConfigErrors, MissingOrUnreadableFile) {
  TempDir dir;
  const std::string missing = (dir.path() / "nope.ini").string();
  EXPECT_CONTAINS(usage_error([&] { load_config(missing); }), "config file '" + missing + "' does not exist");
  EXPECT_CONTAINS(usage_error([&] { load_config(dir.path().string()); }), "is not a regular file");
}

TEST(ConfigErrors, FileErrorsNameTheFilePath) {
  TempDir dir;
  const std::string path = dir.write("typo.ini", "[moe]\nnum_expert = 4\n");
  const std::string m = usage_error([&] { load_config(path); });
  EXPECT_CONTAINS(m, path + ":2: unknown key 'moe.num_expert'; did you mean 'moe.num_experts'?");
}

// ---- cross-key rules

struct RuleCase {
  const char* ini;
  std::vector<const char*> expected;
};

TEST(ConfigRules, EachRuleRejectsItsInconsistency) {
  const std::vector<RuleCase> cases = {
      {"[moe]\nnum_experts = 4\ntop_k = 5\n",
       {"bad.ini: inconsistent config: moe.top_k = 5 (bad.ini:3) exceeds moe.num_experts = 4 (bad.ini:2)",
        "[rule: moe.top_k <= moe.num_experts]"}},
      {"[model]\nwidth = 100\nheads = 3\n", {"model.width = 100 (bad.ini:2) is not divisible by model.heads = 3"}},
      {"[train]\nlr = 0.001\nmin_lr = 0.01\n", {"train.min_lr = 0.01 (bad.ini:3) exceeds train.lr = 0.001 (bad.ini:2)"}},
      {"[upcycle]\nmethod = granular\ngranularity = 3\n",
       {"moe.num_experts = 8 (default) is not divisible by upcycle.granularity = 3 (bad.ini:3)",
        "with upcycle.method = granular (bad.ini:2)"}},
      {"[upcycle]\nmethod = granular\ngranularity = 8\n[model]\nffn_width = 100\n",
       {"model.ffn_width = 100 (bad.ini:5) is not divisible by upcycle.granularity = 8"}},
      {"[moe]\nblocks = list\n", {"moe.blocks = list (bad.ini:2) needs moe.block_list to name the MoE blocks"}},
      {"[moe]\nblock_list = 1, 3\n", {"moe.block_list = 1, 3 (bad.ini:2) is ignored with moe.blocks = every_other"}},
      {"[moe]\nblocks = list\nblock_list = 1, 6\n", {"names block 6 but model.depth = 6 (default)"}},
      {"[model]\npatch_size = 5\n", {"model.image_size = 28 (default) is not divisible by model.patch_size = 5"}},
      {"[model]\nkind = gpt\n", {"data.dataset = fashion_mnist (default) needs model.kind = vit"}},
      {"[model]\nkind = gpt\n[data]\ndataset = text\n", {"has no default location: set data.path"}},
      {"[train]\nbatch_size = 10\nmicro_batches = 4\n", {"train.batch_size = 10 (bad.ini:2) is not divisible by"}},
      {"[parallel]\nexpert_parallel = 3\n", {"is not divisible by parallel.expert_parallel = 3"}},
      {"[dpsl]\nprior = asymmetric\nalphas = 1, 2\n", {"dpsl.alphas = 1, 2 (bad.ini:3) has 2 entries but moe.num_experts = 8"}},
      {"[dpsl]\nalphas = 1, 2\n", {"is ignored with dpsl.prior = symmetric"}},
      {"[dpsl]\nprior = asymmetric\n", {"dpsl.alphas (empty, default) has 0 entries"}},
      {"[upcycle]\nmethod = sparse\nsubspace = random\n",
       {"upcycle.subspace = random (bad.ini:3) is a control of cluster-aware upcycling, but upcycle.method = sparse"}},
      {"[model]\nkind = gpt\n[data]\ndataset = text\npath = /x\n[eval]\nfew_shot_draws = 3\n",
       {"eval.few_shot_draws = 3 (bad.ini:7) sets the few-shot probes of image classification, but model.kind = gpt"}},
  };
  for (const auto& c : cases) {
    const std::string m = parse_error(c.ini);
    for (const char* e : c.expected) EXPECT_CONTAINS(m, e);
  }
}

TEST(ConfigRules, ConsistentCombinationsPass) {
  EXPECT_NO_THROW(parse_config("[moe]\nnum_experts = 4\ntop_k = 4\n", "ok.ini"));
  // Granularity only matters for the granular method.
  EXPECT_NO_THROW(parse_config("[upcycle]\nmethod = cluster\ngranularity = 3\n", "ok.ini"));
  EXPECT_NO_THROW(parse_config("[upcycle]\nmethod = granular\ngranularity = 4\n", "ok.ini"));
  EXPECT_NO_THROW(parse_config("[model]\nkind = gpt\n[data]\ndataset = text\npath = corpus.txt\n", "ok.ini"));
  EXPECT_NO_THROW(parse_config("[moe]\nblocks = list\nblock_list = 0, 5\n", "ok.ini"));
}

TEST(ConfigRules, OverridesCanRepairTheFile) {
  const Config c = parse_config("[moe]\ntop_k = 9\n", "f.ini", {{"moe.num_experts", "16"}});
  EXPECT_EQ(c.get_int("moe.top_k"), 9);
  EXPECT_CONTAINS(parse_error("[moe]\ntop_k = 9\n", {{"moe.num_experts", "4"}}),
                  "bad.ini with command-line overrides: inconsistent config: moe.top_k = 9 (bad.ini:2) exceeds "
                  "moe.num_experts = 4 (command line)");
}

// ---- the INI round trip

TEST(ConfigRoundTrip, DefaultsParseBackToTheSameConfig) {
  const Config c = default_config();
  const std::string ini = c.to_ini();
  const Config back = parse_config(ini, "dump.ini");
  EXPECT_EQ(back, c);
  EXPECT_EQ(back.to_ini(), ini);
}

TEST(ConfigRoundTrip, EveryTypeWithAwkwardValuesParsesBack) {
  const Config c = parse_config(
      "[run]\nstages = moe, eval\ndir = runs/with space\nseed = 0\n"
      "[model]\ndropout = 0.1\ninit_std = 0.30000000000000004\nln_eps = 1e-12\ntie_embeddings = off\n"
      "[moe]\nblocks = list\nblock_list = 0, 1, 5\nnum_experts = 16\ntop_k = 16\ncapacity_factor = 1.25\n"
      "[dpsl]\nprior = asymmetric\nalphas = 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.1, 1.2, 1.3, 1.4, 1.5, 3e-7\n"
      "[checkpoint]\nresume = latest\n",
      "orig.ini", {{"train.lr", "0.0007"}, {"data.path", ""}});
  const std::string ini = c.to_ini();
  const Config back = parse_config(ini, "dump.ini");
  EXPECT_EQ(back, c);
  EXPECT_EQ(back.to_ini(), ini);
  EXPECT_DOUBLE_EQ(back.get_float("model.init_std"), 0.30000000000000004);
  EXPECT_EQ(back.get_string("run.dir"), "runs/with space");
  EXPECT_NE(back, default_config());
}

TEST(ConfigRoundTrip, DumpIsGroupedBySectionWithEveryKey) {
  const std::string ini = default_config().to_ini();
  std::size_t last = 0;
  for (const auto& s : config_sections()) {
    const auto at = ini.find(std::string("\n[") + s.name + "]\n");
    ASSERT_NE(at, std::string::npos) << s.name;
    EXPECT_GT(at, last);
    last = at;
  }
  for (const auto& k : config_schema()) EXPECT_CONTAINS(ini, std::string("\n") + k.name + " =");
}

TEST(ConfigRoundTrip, WriteConfigFileIsReadBack) {
  TempDir dir;
  const Config c = parse_config("[train]\nsteps = 7\n", "x.ini");
  const std::string path = (dir.path() / "config.ini").string();
  write_config_file(c, path);
  EXPECT_EQ(load_config(path), c);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);  // no temporary left
  // A run-time failure (Error), not a usage error.
  try {
    write_config_file(c, (dir.path() / "missing_dir" / "config.ini").string());
    ADD_FAILURE() << "expected Error";
  } catch (const UsageError&) {
    ADD_FAILURE() << "expected a plain Error";
  } catch (const Error& e) {
    EXPECT_CONTAINS(e.message(), "missing_dir");
  }
}

// ---- --help

TEST(ConfigHelp, ListsEveryKeyWithTypeDefaultAndAllowedValues) {
  const std::string h = command_line_help();
  EXPECT_CONTAINS(h, "--print-config");
  const Config d = default_config();
  for (const auto& s : config_sections()) EXPECT_CONTAINS(h, std::string("\n[") + s.name + "]  " + s.help);
  for (const auto& k : config_schema()) {
    const std::string text = d.value_text(k.full_name());
    EXPECT_CONTAINS(h, std::string("\n  ") + k.name + (text.empty() ? " =" : " = " + text));
    EXPECT_CONTAINS(h, describe_type(k));
  }
  EXPECT_CONTAINS(h, "ffn_activation = gelu");
  EXPECT_CONTAINS(h, "[one of {gelu, gelu_erf, swiglu}]");
  EXPECT_CONTAINS(h, "[float, > 0]");
  EXPECT_CONTAINS(h, "[list of int, each >= 0]");
  EXPECT_CONTAINS(h, "- moe.top_k <= moe.num_experts");
}

// ---- the command line

TEST(CommandLineParse, ConfigOverridesAndFlags) {
  const CommandLine cl =
      parse_args({"cfg.ini", "--train.steps=5", "--moe.top_k", "3", "--checkpoint.resume=", "--run.dir=a=b", "--print-config"});
  EXPECT_EQ(cl.config_path, "cfg.ini");
  EXPECT_TRUE(cl.print_config);
  EXPECT_FALSE(cl.help);
  ASSERT_EQ(cl.overrides.size(), 4u);
  EXPECT_EQ(cl.overrides[0].key, "train.steps");
  EXPECT_EQ(cl.overrides[0].value, "5");
  EXPECT_EQ(cl.overrides[1].key, "moe.top_k");
  EXPECT_EQ(cl.overrides[1].value, "3");
  EXPECT_EQ(cl.overrides[2].value, "");  // clears a string key set in the file
  EXPECT_EQ(cl.overrides[3].value, "a=b");
}

TEST(CommandLineParse, HelpNeedsNoConfig) {
  EXPECT_TRUE(parse_args({"--help"}).help);
  EXPECT_TRUE(parse_args({"-h"}).help);
}

TEST(CommandLineParse, Errors) {
  EXPECT_CONTAINS(usage_error([] { parse_args({}); }), "no CONFIG.ini given");
  EXPECT_CONTAINS(usage_error([] { parse_args({"c.ini", "--train.stpes=5"}); }),
                  "command line --train.stpes=5: unknown key 'train.stpes'; did you mean 'train.steps'?");
  // No abbreviations: a prefix of a key is a typo, not that key.
  EXPECT_CONTAINS(usage_error([] { parse_args({"c.ini", "--train.step=5"}); }), "did you mean 'train.steps'?");
  EXPECT_CONTAINS(usage_error([] { parse_args({"c.ini", "--bogus"}); }), "unknown option '--bogus'");
  EXPECT_CONTAINS(usage_error([] { parse_args({"c.ini", "--train.steps"}); }), "'--train.steps' is missing");
  EXPECT_CONTAINS(usage_error([] { parse_args({"a.ini", "b.ini"}); }), "too many positional options");
  EXPECT_CONTAINS(usage_error([] { parse_args({"c.ini", "--help=1"}); }), "does not take any arguments");
}
