//! Atom feeds of newly failing cells (the whole tree, or one package), built with
//! `atom_syndication` from the overview's changes. Text from uploads goes through
//! `crate::text::visible`: XML 1.0 cannot carry a NUL even escaped.

use atom_syndication::{Entry, Feed, Link, Person, Text};

use crate::text::visible;
use crate::wire;

/// The most entries a feed carries (the newest), as feeds do: a toolchain bump can make tens of
/// thousands of cells newly failing at once.
pub const ENTRIES: usize = 100;

/// The feed of `changes` (newly failing cells), `title` its title, `base` the server's public
/// URL (links must be absolute), `self_path` the feed's own path.
pub fn newly_failing(changes: &[wire::ChangeItem], title: &str, base: &str, self_path: &str, updated: &str) -> String {
    let time = |s: &str| atom_syndication::FixedDateTime::parse_from_rfc3339(s).unwrap_or_default();
    let entries: Vec<Entry> = changes
        .iter()
        .map(|c| {
            let mut e = Entry::default();
            e.set_id(format!("{base}/cell/{}", c.seq));
            e.set_title(Text::plain(visible(&format!(
                "{}: {} with USE=\"{}\" ({}), was {}",
                c.cpv, c.status, c.use_flags, c.compiler, c.previous_status
            ))));
            e.set_links(vec![Link { href: format!("{base}/cell/{}", c.seq), ..Link::default() }]);
            e.set_summary(Some(Text::plain(visible(&c.summary))));
            e.set_updated(time(updated));
            e
        })
        .collect();
    let mut feed = Feed::default();
    feed.set_id(format!("{base}{self_path}"));
    feed.set_title(Text::plain(visible(title)));
    feed.set_updated(time(updated));
    feed.set_authors(vec![Person { name: "gentoo@home".into(), ..Person::default() }]);
    feed.set_links(vec![
        Link { href: format!("{base}{self_path}"), rel: "self".into(), ..Link::default() },
        Link { href: format!("{base}/"), rel: "alternate".into(), ..Link::default() },
    ]);
    feed.set_entries(entries);
    feed.to_string()
}
