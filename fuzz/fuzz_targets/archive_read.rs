//! `gah_core::archive::read` on arbitrary bytes: it must never panic, never allocate past
//! its caps, and whatever it accepts must be self-consistent and survive a round trip.
#![no_main]

use gah_core::archive::{self, Limits};
use libfuzzer_sys::fuzz_target;

// Smaller caps than the defaults so bombs are refused in microseconds; the checks are the
// same code. libFuzzer's -rss_limit_mb catches any cap that does not hold.
const LIMITS: Limits = Limits { max_compressed: 1 << 20, max_uncompressed: 4 << 20, max_ratio: 200, ratio_floor: 64 << 10 };

fuzz_target!(|data: &[u8]| {
    let Ok(read) = archive::read(data, LIMITS) else { return };
    // Accepted means consistent: the checks `read` promises hold on its output.
    assert!(read.outcome.check_consistency().is_ok());
    assert!(read.outcome.mismatch_with(&read.job).is_none());
    // And what was accepted writes back to an archive that reads the same.
    let mut again = Vec::new();
    archive::write(&mut again, &read.job, &read.outcome, &read.build_log, read.emerge_info.as_deref()).unwrap();
    let reread = archive::read(&again, Limits::default()).unwrap();
    assert_eq!(reread.outcome, read.outcome);
    assert_eq!(reread.job, read.job);
    assert_eq!(reread.emerge_info, read.emerge_info);
});
