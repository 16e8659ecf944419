//! The one histofed binary: every role and tool is a subcommand (see `histofed --help`).
fn main() -> std::process::ExitCode {
    histofed::cli::main()
}
