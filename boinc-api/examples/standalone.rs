//! Runs the BOINC runtime in standalone mode (no client): run it in a
//! scratch directory with `cargo run -p boinc-api --example standalone`.
//! It leaves `boinc_finish_called` (and BOINC's lock file) behind.

#![allow(clippy::print_stdout)] // An example shows its results.

fn main() -> Result<(), boinc_api::Error> {
    let rt = boinc_api::init(&boinc_api::Options::wrapper())?;
    println!("standalone: {}", rt.is_standalone());
    let input = rt.resolve_filename("input")?;
    println!("logical 'input' -> {}", input.display());
    rt.fraction_done(0.25);
    println!("status: {:?}", rt.status());
    rt.fraction_done(1.0);
    rt.finish(0)
}
