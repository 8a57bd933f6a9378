//! Times `configurations` per ebuild over a repository (development aid).

#![allow(clippy::print_stdout, clippy::print_stderr)] // An example reports on its terminal.
fn main() {
    let path = std::env::args().nth(1).expect("REPO");
    let (repo, _) = gah_ebuild::read_repository(std::path::Path::new(&path));
    let mut times = Vec::new();
    let t0 = std::time::Instant::now();
    for e in &repo.ebuilds {
        let t = std::time::Instant::now();
        let (c, _) = gah_ebuild::configurations(e, &gah_ebuild::Profile::amd64_linux(), gah_ebuild::Strategy::Covering { t: 2, seed: 0 });
        times.push((t.elapsed(), e.cpv.clone(), e.iuse.len(), c.len()));
    }
    times.sort();
    for t in times.iter().rev().take(10) {
        println!("{:?} {} iuse={} rows={}", t.0, t.1, t.2, t.3);
    }
    println!("total {:?}", t0.elapsed());
}
