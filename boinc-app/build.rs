//! gah-app finds the BOINC shared libraries shipped beside it in its app version folder.
fn main() {
    println!("cargo:rustc-link-arg-bin=gah-app=-Wl,-rpath,$ORIGIN");
}
