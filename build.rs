//! Bakes libtorch's directory into every binary's RPATH so tests and binaries run without LD_LIBRARY_PATH.
//! torch-sys exports the directory it linked against as `DEP_TCH_LIBTORCH_LIB` (we depend on it directly).
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        // With the default --as-needed, libtorch_cuda is dropped and CUDA is never available (tch-rs #980).
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-ltorch");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
