//! Binary entry point: parse, run, map the outcome to an exit code.

fn main() -> std::process::ExitCode {
    mesh_cli::main()
}
