//! temporary
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let filt = std::env::args().nth(2).unwrap_or_default();
    let (repo, _) = gah_ebuild::read_repository(std::path::Path::new(&path));
    let p = gah_ebuild::Profile::amd64_linux();
    for e in &repo.ebuilds {
        if !e.cpv.contains(&filt) { continue; }
        let s = gah_ebuild::solve::Space::new(e, &p);
        let t = std::time::Instant::now();
        let c = gah_ebuild::cover::covering_array(&s, 2, 0);
        println!("{} n={} rows={} infeasible={} exhausted={} {:?}", e.cpv, s.vars().len(), c.rows.len(), c.infeasible, s.budget_exhausted(), t.elapsed());
    }
}
