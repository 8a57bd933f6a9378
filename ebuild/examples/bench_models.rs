//! Exports ebuild models for `bench/workgen-compare.sh`: one JSON line per distinct model
//! (IUSE without `test`, REQUIRED_USE) with at least `MIN_VARS` flags and a REQUIRED_USE,
//! with everything a peer tool needs to honour the same constraints (the REQUIRED_USE text,
//! the values of flags that are not varied, the profile's pins), our pairwise row count and
//! time, and the value pairs our rows cover (= every feasible pair: our cover is complete,
//! infeasible pairs are proven so by the solver), the mandatory rows our array starts with,
//! and the size of our plain array without them (`cover::covering_array_unseeded`).
//!
//! Usage: `cargo run --release -p gah-ebuild --example bench_models -- MIN_VARS REPO...`

#![allow(clippy::print_stdout, clippy::print_stderr)] // An example reports on its terminal.

use std::collections::{BTreeMap, BTreeSet};

use gah_ebuild::solve::{Space, TestRule};
use gah_ebuild::{cover, Profile};

fn main() {
    let mut args = std::env::args().skip(1);
    let min_vars: usize = args.next().and_then(|a| a.parse().ok()).expect("MIN_VARS REPO...");
    let profile = Profile::amd64_linux();
    let mut seen = BTreeSet::new();
    let mut skipped_derived = 0;
    for repo_path in args {
        let (repo, _) = gah_ebuild::read_repository(std::path::Path::new(&repo_path));
        for e in &repo.ebuilds {
            if e.required_use.is_empty() {
                continue;
            }
            let space = Space::new(e, &profile);
            if space.vars().len() < min_vars || !seen.insert((space.vars().to_vec(), e.required_use.to_string())) {
                continue;
            }
            let test = match space.test_rule() {
                TestRule::Absent => false,
                TestRule::Fixed(v) => v,
                TestRule::Derived => {
                    // RESTRICT-dependent `test`: not expressible as a plain filter.
                    skipped_derived += 1;
                    continue;
                }
            };
            let vars = space.vars();
            let mut fixed = BTreeMap::new();
            for f in e.required_use.flags() {
                if !vars.contains(f) {
                    fixed.insert(f.clone(), if f == "test" && e.has_iuse("test") { test } else { profile.implicit(f) });
                }
            }
            let pins: BTreeMap<&str, bool> = vars.iter().filter_map(|v| profile.pinned(&e.cpv, v).map(|p| (v.as_str(), p))).collect();
            let t0 = std::time::Instant::now();
            let c = cover::covering_array(&space, 2, 0);
            // The mandatory rows lead (default-closest, all-on-closest, all-off-closest, without
            // duplicates): the same rows, found the same way, as the first of `c`.
            let mandatory = [space.defaults().to_vec(), vec![true; space.vars().len()], vec![false; space.vars().len()]]
                .iter()
                .filter_map(|t| space.closest(t))
                .fold(Vec::new(), |mut v: Vec<Vec<bool>>, r| {
                    if !v.contains(&r) {
                        v.push(r);
                    }
                    v
                })
                .len();
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            let plain = cover::covering_array_unseeded(&space, 2, 0);
            let mut pairs = BTreeSet::new();
            for r in &c.rows {
                for i in 0..r.len() {
                    for j in i + 1..r.len() {
                        pairs.insert((i, r[i], j, r[j]));
                    }
                }
            }
            let pairs: Vec<[usize; 4]> = pairs.into_iter().map(|(i, a, j, b)| [i, usize::from(a), j, usize::from(b)]).collect();
            let line = serde_json::json!({
                "repo": repo.name, "cpv": e.cpv, "vars": vars, "required_use": e.required_use.to_string(),
                "empty_groups_true": e.empty_groups_true(), "fixed": fixed, "pins": pins,
                "ours_rows": c.rows.len(), "ours_ms": ms,
                "rows": c.rows.iter().map(|r| r.iter().map(|b| u8::from(*b)).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "feasible_pairs": pairs,
                "mandatory_rows": c.rows.iter().take(mandatory).map(|r| r.iter().map(|b| u8::from(*b)).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "plain_rows": plain.rows.len(),
            });
            println!("{line}");
        }
    }
    eprintln!("bench_models: skipped {skipped_derived} models whose test flag depends on RESTRICT conditionals");
}
