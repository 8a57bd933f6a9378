//! Generates raw bindings to the installed BOINC API headers and links the
//! BOINC shared libraries.
//!
//! Environment overrides:
//! - `BOINC_INCLUDE_DIR`: directory holding `boinc_api.h` (default
//!   `/usr/include/boinc`).
//! - `BOINC_LIB_DIR`: directory holding `libboinc_api.so` and `libboinc.so`
//!   (default: the linker's search path).

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=BOINC_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=BOINC_LIB_DIR");
    println!("cargo:rerun-if-changed=build.rs");

    let include_dir = env::var_os("BOINC_INCLUDE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/include/boinc"));
    let api_header = include_dir.join("boinc_api.h");
    let err_header = include_dir.join("error_numbers.h");
    for header in [&api_header, &err_header] {
        if !header.is_file() {
            panic!(
                "\n\nboinc-api: BOINC header {} not found.\n\
                 Install the BOINC application library headers \
                 (Debian/Ubuntu: `apt-get install libboinc-app-dev`; \
                 Gentoo: sci-misc/boinc) or set BOINC_INCLUDE_DIR.\n\n",
                header.display()
            );
        }
        println!("cargo:rerun-if-changed={}", header.display());
    }

    // Parse the headers as C: boinc_api.h and app_ipc.h hide their C++ parts
    // behind `#ifdef __cplusplus`, so C mode sees exactly the `extern "C"` API.
    let wrapper = format!("#include \"{}\"\n#include \"{}\"\n", api_header.display(), err_header.display());
    let bindings = bindgen::Builder::default()
        .header_contents("boinc_api_wrapper.h", &wrapper)
        .clang_arg("-xc")
        .clang_arg(format!("-I{}", include_dir.display()))
        .allowlist_function("boinc_.*")
        .allowlist_type("BOINC_OPTIONS")
        .allowlist_type("BOINC_STATUS")
        .allowlist_var("EXIT_.*")
        .allowlist_var("ERR_.*")
        // Match the workspace's rust-version (1.80): no `unsafe extern`.
        .rust_target(bindgen::RustTarget::stable(80, 0).expect("valid Rust target"))
        // `#define EXIT_ABORTED_BY_CLIENT 194` etc. become `i32`, like the
        // process exit status they describe.
        .default_macro_constant_type(bindgen::MacroTypeVariation::Signed)
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(true)
        .generate()
        .unwrap_or_else(|e| {
            panic!(
                "boinc-api: bindgen failed on {}: {e} \
                 (is libclang installed? Debian: `apt-get install libclang-dev`)",
                api_header.display()
            )
        });

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    bindings.write_to_file(out.join("bindings.rs")).expect("boinc-api: cannot write bindings.rs");

    if let Some(lib_dir) = env::var_os("BOINC_LIB_DIR") {
        println!("cargo:rustc-link-search=native={}", PathBuf::from(lib_dir).display());
    }
    // Debian's libboinc_api.a is an empty stub: always link the shared
    // libraries. libboinc_api.so depends on libboinc.so (and libstdc++ via
    // its DT_NEEDED entries); boinc_resolve_filename lives in libboinc.so.
    println!("cargo:rustc-link-lib=dylib=boinc_api");
    println!("cargo:rustc-link-lib=dylib=boinc");
}
