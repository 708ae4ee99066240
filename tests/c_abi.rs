//! Compiles `tests/c/abi_check.c` against `include/ingress_lb.h` with the C compiler
//! the `cc` crate finds, links it to `libingress_lb.so` and runs it: the header, the
//! exported symbols and their behaviour agree.
//!
//! `cargo test` builds the library as an rlib only, so the shared library is built
//! here, by cargo, into its own target directory (`target/c-abi`): no lock is shared
//! with the cargo running this test, and it is a no-op when up to date.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn c_program_uses_the_shared_library_through_the_header() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // target/<profile>/deps/c_abi-<hash> -> target/
    let exe = std::env::current_exe().unwrap();
    let target_dir = exe.parent().unwrap().parent().unwrap().parent().unwrap().join("c-abi");
    let build = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["build", "--quiet", "--lib", "--target-dir"])
        .arg(&target_dir)
        .status()
        .expect("run cargo build --lib");
    assert!(build.success(), "cargo build --lib failed");
    let profile_dir = target_dir.join("debug");
    let lib = profile_dir.join("libingress_lb.so");
    assert!(lib.exists(), "{} not built", lib.display());
    let out = profile_dir.join("abi_check");
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .opt_level(0)
        .host(env!("ILB_BUILD_HOST"))
        .target(env!("ILB_BUILD_TARGET"))
        .get_compiler();
    let status = compiler
        .to_command()
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/c/abi_check.c"))
        .arg("-o")
        .arg(&out)
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", profile_dir.display()))
        .status()
        .expect("run the C compiler");
    assert!(status.success(), "compiling tests/c/abi_check.c failed");
    let run = Command::new(&out).arg(root.join("tests/data/certs")).output().expect("run abi_check");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "abi_check failed:\n{stdout}{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
