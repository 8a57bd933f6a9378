//! Per-host agreement counts, so hosts that keep disagreeing lose trust.
//!
//! A small SQLite file (default `$GAH_HOST_STATS`, else `./results/host-stats.sqlite`) with
//! one row per host: how many comparisons it agreed in, how many it disagreed in, and how
//! many of its results `init` found invalid. With two replicas a disagreement cannot say
//! which host is wrong, so both are counted; a host that is often on the losing side stands
//! out over many workunits. BOINC's `script_validator` passes no host identity, so the
//! identifiers are opaque strings: BOINC result ids (join with `result.hostid`), or host
//! names in `gah run`.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

/// The counts kept for one host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCounts {
    /// Comparisons this host's result agreed in.
    pub agreed: u64,
    /// Comparisons this host's result disagreed in.
    pub disagreed: u64,
    /// Results of this host that `init` refused.
    pub invalid: u64,
}

impl HostCounts {
    /// Share of this host's checks that went wrong (disagreements and invalid results), 0..=1.
    pub fn error_rate(&self) -> f64 {
        let total = self.agreed + self.disagreed + self.invalid;
        if total == 0 {
            0.0
        } else {
            (self.disagreed + self.invalid) as f64 / total as f64
        }
    }
}

/// An open host statistics file.
pub struct HostStats {
    conn: Connection,
}

/// Where host statistics go when no path is given: `$GAH_HOST_STATS`, else
/// `./results/host-stats.sqlite`.
pub fn default_path() -> PathBuf {
    std::env::var_os("GAH_HOST_STATS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("results/host-stats.sqlite"))
}

/// The statistics file's schema. `IF NOT EXISTS`: files made before migrations were recorded
/// already have the table.
const MIGRATIONS: &[gah_util::sqlite::Migration] = &[gah_util::sqlite::Migration {
    name: "0001_host_counts",
    sql: "CREATE TABLE IF NOT EXISTS host_counts (
                host       TEXT PRIMARY KEY,
                agreed     INTEGER NOT NULL DEFAULT 0,
                disagreed  INTEGER NOT NULL DEFAULT 0,
                invalid    INTEGER NOT NULL DEFAULT 0,
                updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
            )",
}];

impl HostStats {
    /// Opens (creating if needed) the statistics file at `path`.
    pub fn open(path: &Path) -> Result<HostStats, gah_util::sqlite::SqliteError> {
        // Statistics, not results: a lost last write after a power cut is acceptable.
        let options = gah_util::sqlite::Options { busy_timeout: std::time::Duration::from_secs(10), synchronous_full: false };
        let conn = gah_util::sqlite::open(path, MIGRATIONS, options)?;
        Ok(HostStats { conn })
    }

    /// Counts one comparison between the results of hosts `a` and `b`.
    pub fn record_comparison(&mut self, a: &str, b: &str, agreed: bool) -> rusqlite::Result<()> {
        let column = if agreed { "agreed" } else { "disagreed" };
        let tx = self.conn.transaction()?;
        for host in [a, b] {
            bump(&tx, host, column)?;
        }
        tx.commit()
    }

    /// Counts one result of `host` that `init` refused.
    pub fn record_invalid(&mut self, host: &str) -> rusqlite::Result<()> {
        bump(&self.conn, host, "invalid")
    }

    /// The counts of `host` (zero when unknown).
    pub fn counts(&self, host: &str) -> rusqlite::Result<HostCounts> {
        let row = self
            .conn
            .query_row("SELECT agreed, disagreed, invalid FROM host_counts WHERE host = ?1", [host], |r| {
                Ok(HostCounts {
                    agreed: r.get::<_, i64>(0)? as u64,
                    disagreed: r.get::<_, i64>(1)? as u64,
                    invalid: r.get::<_, i64>(2)? as u64,
                })
            })
            .optional()?;
        Ok(row.unwrap_or_default())
    }
}

fn bump(conn: &Connection, host: &str, column: &str) -> rusqlite::Result<()> {
    // `column` is one of three literals above, never input.
    conn.execute(
        &format!(
            "INSERT INTO host_counts (host, {column}) VALUES (?1, 1)
             ON CONFLICT (host) DO UPDATE SET {column} = {column} + 1,
                 updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')"
        ),
        params![host],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accumulate() {
        let dir = std::env::temp_dir().join(format!("gah-hosts-{}", std::process::id()));
        let path = dir.join("hosts.sqlite");
        let mut stats = HostStats::open(&path).unwrap();
        stats.record_comparison("h1", "h2", true).unwrap();
        stats.record_comparison("h1", "h3", false).unwrap();
        stats.record_invalid("h3").unwrap();
        assert_eq!(stats.counts("h1").unwrap(), HostCounts { agreed: 1, disagreed: 1, invalid: 0 });
        assert_eq!(stats.counts("h3").unwrap(), HostCounts { agreed: 0, disagreed: 1, invalid: 1 });
        assert_eq!(stats.counts("nobody").unwrap(), HostCounts::default());
        assert!((stats.counts("h3").unwrap().error_rate() - 1.0).abs() < 1e-9);
        drop(stats);
        let _ = std::fs::remove_dir_all(dir);
    }
}
