// The `qm` executable: everything lives in the CLI library.
#include "cli/cli.h"

int main(int argc, char** argv) { return qm::cli::Main(argc, argv); }
