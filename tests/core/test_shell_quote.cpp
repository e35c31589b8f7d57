// shell_quote (core/shell_quote.h): every word, whatever bytes it holds, comes back from a real
// POSIX shell as itself, and plain words stay readable.
#include <doctest/doctest.h>

#include <string>

#include "apps/apps_test_util.h"
#include "core/shell_quote.h"

using namespace bnlab;

TEST_CASE("core.shell_quote: plain words unchanged, others single-quoted") {
  CHECK(shell_quote("runs/train-1") == "runs/train-1");
  CHECK(shell_quote("--lr=0.1,a:b+c@d%e_f") == "--lr=0.1,a:b+c@d%e_f");
  CHECK(shell_quote("") == "''");
  CHECK(shell_quote("my data") == "'my data'");
  CHECK(shell_quote("it's") == "'it'\\''s'");
}

TEST_CASE("core.shell_quote: /bin/sh reads each quoted word back as the word") {
  for (const std::string& word :
       {std::string("plain"), std::string(""), std::string("two words"), std::string("it's"),
        std::string("''"), std::string("$HOME `id` $(id) \\ \" ; & | < > * ? [a] ~ # !"),
        std::string("new\nline\ttab"), std::string("-n"), std::string("\xc3\xa9t\xc3\xa9")}) {
    CAPTURE(word);
    const apps_test::CliResult r =
        apps_test::run_shell("/bin/sh -c " + shell_quote("printf %s " + shell_quote(word)));
    CHECK(r.exit_code == 0);
    CHECK(r.output == word);
  }
}
