//! Compiles `tests/c/abi_check.c` against `include/ingress_lb.h` with the C compiler
//! the `cc` crate finds, links it to the shared library cargo built next to this
//! test, and runs it: the header, the exported symbols and their behaviour agree.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn c_program_uses_the_shared_library_through_the_header() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // target/<profile>/deps/c_abi-<hash> -> target/<profile>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
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
    let run = Command::new(&out).output().expect("run abi_check");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "abi_check failed:\n{stdout}{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
