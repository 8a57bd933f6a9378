//! `Outcome::from_json` and `Job::from_json` on arbitrary bytes: never a panic, and what
//! parses serialises back to the same value.
#![no_main]

use gah_core::job::Job;
use gah_core::outcome::Outcome;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(outcome) = Outcome::from_json(data) {
        let _ = outcome.check_consistency();
        assert_eq!(Outcome::from_json(&outcome.to_json()).unwrap(), outcome);
    }
    if let Ok(job) = Job::from_json(data) {
        assert_eq!(Job::from_json(&job.to_json()).unwrap(), job);
    }
});
