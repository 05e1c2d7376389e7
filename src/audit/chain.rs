//! Verifying the audit log's hash chain (`vmdeck audit verify`): walks the chain from its
//! anchor in seq order and reports the first entry that does not fit, whether it was altered
//! (its hash is wrong), removed (a gap, or the next entry's link pointing elsewhere), inserted
//! or moved (a link that does not match), or written settled outside the chain. The encoding
//! and the write side are in `events::chain`.
//!
//! What a clean result proves: the entries from the anchor to the head are those that were
//! sealed, unchanged, in that order. What it cannot prove on its own: that the newest entries
//! were not cut off, or that someone who knows this encoding did not rewrite the chain from the
//! entry they changed onwards (SHA-256 has no secret). A head printed by an earlier run and
//! kept elsewhere detects both: given back (`--head SEQ:HASH`), the chain must still reach it,
//! with that hash.

use std::fmt;

use futures::TryStreamExt;
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Row, SqliteConnection, SqlitePool};

use crate::events::chain::{Content, Link, Seal, CONTENT_COLUMNS};

/// A chained entry as stored.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub content: Content,
    pub seal: Seal,
}

/// The first thing wrong with the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The `audit_retention` row, which holds the anchor, is gone.
    NoAnchor,
    /// An entry the anchor has passed is still there: the anchor was moved, not pruned to.
    BeforeAnchor { id: i64, seq: i64, anchor: i64 },
    /// Positions `from..=to` are empty before entry `id`: entries removed.
    Missing { from: i64, to: i64, id: i64, seq: i64 },
    /// Two entries claim one position.
    Duplicate { id: i64, seq: i64 },
    /// The entry's content no longer gives its hash.
    Altered { id: i64, seq: i64 },
    /// The entry is intact but was sealed after another entry than the one before it now.
    Unlinked { id: i64, seq: i64, after: Option<(i64, i64)> },
    /// A column holds a value of the wrong type (only an edit does that).
    Unreadable { id: Option<i64>, seq: Option<i64>, reason: String },
    /// A settled entry without a chain position, written behind vmdeck's back.
    Unchained { id: i64 },
    /// The entry (or the anchor, without an id) at a head recorded earlier has another hash.
    Rewritten { id: Option<i64>, seq: i64 },
    /// The chain ends before a head recorded earlier.
    CutOff { recorded: i64, head: i64 },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::NoAnchor => {
                write!(f, "the chain's anchor (the audit_retention row) is missing")
            }
            Finding::BeforeAnchor { id, seq, anchor } => write!(
                f,
                "entry {id} (seq {seq}) lies at or before the anchor (seq {anchor}): the anchor \
                 was moved past entries retention did not prune"
            ),
            Finding::Missing { from, to, id, seq } if from == to => {
                write!(
                    f,
                    "seq {from} is missing before entry {id} (seq {seq}): an entry was removed"
                )
            }
            Finding::Missing { from, to, id, seq } => write!(
                f,
                "seq {from} to {to} are missing before entry {id} (seq {seq}): entries were removed"
            ),
            Finding::Duplicate { id, seq } => {
                write!(f, "entry {id} (seq {seq}) takes a position already taken: inserted")
            }
            Finding::Altered { id, seq } => {
                write!(f, "entry {id} (seq {seq}) was altered: its content does not match its hash")
            }
            Finding::Unlinked { id, seq, after } => {
                let before = match after {
                    Some((prev_id, prev_seq)) => format!("entry {prev_id} (seq {prev_seq})"),
                    None => "the anchor".to_string(),
                };
                write!(
                    f,
                    "entry {id} (seq {seq}) was not sealed after {before}: an entry was removed, \
                     inserted or moved between them"
                )
            }
            Finding::Unreadable { id, seq, reason } => {
                let id = id.map_or("an entry".to_string(), |id| format!("entry {id}"));
                let seq = seq.map_or(String::new(), |seq| format!(" (seq {seq})"));
                write!(
                    f,
                    "{id}{seq} was altered: a column holds a value of the wrong type ({reason})"
                )
            }
            Finding::Unchained { id } => write!(
                f,
                "entry {id} is settled but has no place in the chain: it was inserted outside it"
            ),
            Finding::Rewritten { id, seq } => {
                let what = id.map_or("the anchor".to_string(), |id| format!("entry {id}"));
                write!(
                    f,
                    "{what} (seq {seq}) is not the one recorded as head there: the chain was \
                     rewritten up to it"
                )
            }
            Finding::CutOff { recorded, head } => write!(
                f,
                "the chain ends at seq {head}, short of the head recorded at seq {recorded}: its \
                 newest entries were cut off"
            ),
        }
    }
}

/// A clean log, in numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Entries verified after the anchor.
    pub entries: u64,
    pub anchor: Link,
    /// The last entry verified (the anchor when there is none): keep its hash elsewhere to
    /// detect a rewritten or shortened chain later.
    pub head: Link,
    /// Power requests still in flight, which join the chain when they settle.
    pub pending: i64,
    /// What became of the head recorded earlier, when one was given.
    pub recorded: Option<Recorded>,
}

/// A head recorded earlier, as verification found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// In the chain, unchanged: its seq.
    Found(i64),
    /// Pruned by retention since: nothing left to compare it with.
    Pruned(i64),
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Summary { entries, anchor, head, pending, recorded } = self;
        if *entries == 0 {
            write!(f, "audit log intact: no entries after the anchor (seq {})", anchor.seq)?;
        } else {
            let noun = if *entries == 1 { "entry" } else { "entries" };
            write!(
                f,
                "audit log intact: {entries} {noun} verified, seq {} to {} after the anchor \
                 (seq {})",
                anchor.seq + 1,
                head.seq,
                anchor.seq
            )?;
        }
        write!(f, "; head {head}")?;
        match recorded {
            Some(Recorded::Found(seq)) => write!(f, "; the recorded head (seq {seq}) is in it")?,
            Some(Recorded::Pruned(seq)) => {
                write!(f, "; the recorded head (seq {seq}) has been pruned since, not checked")?
            }
            None => {}
        }
        if *pending > 0 {
            write!(f, "; {pending} pending power requests join the chain when they settle")?;
        }
        Ok(())
    }
}

/// Why verification did not end with a [`Summary`].
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("audit log tampered: {0}")]
    Tampered(Finding),
    #[error("cannot read the audit log: {0}")]
    Db(#[from] sqlx::Error),
}

/// Walks a chain entry by entry, from its anchor: the checks, without the database.
#[derive(Debug)]
pub struct Walk {
    anchor: Link,
    last: Link,
    last_id: Option<i64>,
    entries: u64,
    recorded: Option<Link>,
}

impl Walk {
    /// A walk from `anchor`, checking on the way a head `recorded` earlier, if any.
    pub fn from(anchor: Link, recorded: Option<Link>) -> Walk {
        Walk { last: anchor.clone(), anchor, last_id: None, entries: 0, recorded }
    }

    /// Checks the next entry in seq order: its position, then its own hash, then its link to
    /// the entry before, so that an intact entry after a removed or moved one is reported as
    /// such, not as altered.
    pub fn step(&mut self, e: &Sealed) -> Result<(), Finding> {
        let (id, seq) = (e.content.id, e.seal.seq);
        let expected = self.last.seq + 1;
        if seq <= self.anchor.seq {
            return Err(Finding::BeforeAnchor { id, seq, anchor: self.anchor.seq });
        }
        if seq < expected {
            return Err(Finding::Duplicate { id, seq });
        }
        if seq > expected {
            return Err(Finding::Missing { from: expected, to: seq - 1, id, seq });
        }
        if e.content.seal(&e.seal.prev) != e.seal.hash {
            return Err(Finding::Altered { id, seq });
        }
        if e.seal.prev != self.last.hash {
            let after = self.last_id.map(|prev| (prev, self.last.seq));
            return Err(Finding::Unlinked { id, seq, after });
        }
        if self.recorded.as_ref().is_some_and(|r| r.seq == seq && r.hash != e.seal.hash) {
            return Err(Finding::Rewritten { id: Some(id), seq });
        }
        self.last = e.seal.link();
        self.last_id = Some(id);
        self.entries += 1;
        Ok(())
    }

    /// The walk's result once every entry has been stepped through.
    pub fn finish(self, pending: i64) -> Result<Summary, Finding> {
        let recorded = match &self.recorded {
            None => None,
            Some(r) if r.seq > self.last.seq => {
                return Err(Finding::CutOff { recorded: r.seq, head: self.last.seq })
            }
            Some(r) if r.seq < self.anchor.seq => Some(Recorded::Pruned(r.seq)),
            Some(r) if r.seq == self.anchor.seq && r.hash != self.anchor.hash => {
                return Err(Finding::Rewritten { id: None, seq: r.seq })
            }
            Some(r) => Some(Recorded::Found(r.seq)),
        };
        Ok(Summary {
            entries: self.entries,
            anchor: self.anchor,
            head: self.last,
            pending,
            recorded,
        })
    }
}

/// Verifies the whole log in one read transaction, so the server and the CLI can go on writing
/// while it runs (WAL): what is verified is the log as of its start. `recorded` is a head an
/// earlier run printed, kept elsewhere: the chain must still reach it unchanged.
pub async fn verify(pool: &SqlitePool, recorded: Option<Link>) -> Result<Summary, VerifyError> {
    let mut tx = pool.begin().await?;
    let anchor = anchor(&mut tx).await?.ok_or(VerifyError::Tampered(Finding::NoAnchor))?;
    let mut walk = Walk::from(anchor, recorded);
    {
        let sql = format!(
            "SELECT {CONTENT_COLUMNS}, chain_seq, chain_prev, chain_hash FROM audit_log
             WHERE chain_seq IS NOT NULL ORDER BY chain_seq"
        );
        let mut rows = sqlx::query(&sql).fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            sealed(&row).and_then(|e| walk.step(&e)).map_err(VerifyError::Tampered)?;
        }
    }
    if let Some(id) = first_unchained(&mut tx).await? {
        return Err(VerifyError::Tampered(Finding::Unchained { id }));
    }
    let pending = pending(&mut tx).await?;
    walk.finish(pending).map_err(VerifyError::Tampered)
}

/// Reads a chained row; a value of the wrong type in any column is a finding, not an error.
fn sealed(row: &SqliteRow) -> Result<Sealed, Finding> {
    let read = || -> sqlx::Result<Sealed> {
        let text = |column| row.try_get::<Option<String>, _>(column).map(Option::unwrap_or_default);
        Ok(Sealed {
            content: Content::from_row(row)?,
            seal: Seal {
                seq: row.try_get("chain_seq")?,
                prev: text("chain_prev")?,
                hash: text("chain_hash")?,
            },
        })
    };
    read().map_err(|e| Finding::Unreadable {
        id: row.try_get("id").ok(),
        seq: row.try_get("chain_seq").ok(),
        reason: e.to_string(),
    })
}

async fn anchor(conn: &mut SqliteConnection) -> sqlx::Result<Option<Link>> {
    sqlx::query_as(
        "SELECT anchor_seq AS seq, anchor_hash AS hash FROM audit_retention WHERE id = 1",
    )
    .fetch_optional(conn)
    .await
}

/// The first settled entry without a chain position (every settled entry has one once
/// `events::chain::backfill` has run).
async fn first_unchained(conn: &mut SqliteConnection) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT id FROM audit_log
         WHERE chain_seq IS NULL AND status NOT IN ('requested', 'sent', 'accepted')
         ORDER BY id LIMIT 1",
    )
    .fetch_optional(conn)
    .await
}

async fn pending(conn: &mut SqliteConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE status IN ('requested', 'sent', 'accepted')",
    )
    .fetch_one(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Actor, AuditKind, AuditOutcome};
    use crate::events::chain::GENESIS;

    fn entry(id: i64) -> Content {
        let who = Actor { user: Some(format!("user{id}")), addr: Some("10.0.0.1".into()) };
        let at = 1_700_000_000_000 + id;
        Content { id, ..Content::settled(AuditKind::Login, &who, AuditOutcome::Ok, at) }
    }

    /// Entries 1..=n (ids 101…) sealed one after the other from `anchor`.
    fn chain(anchor: &Link, n: i64) -> Vec<Sealed> {
        let mut link = anchor.clone();
        (1..=n)
            .map(|i| {
                let content = entry(100 + i);
                let seal = link.seal(&content);
                link = seal.link();
                Sealed { content, seal }
            })
            .collect()
    }

    fn genesis() -> Link {
        Link { seq: 0, hash: GENESIS.into() }
    }

    fn walk(anchor: Link, entries: &[Sealed]) -> Result<Summary, Finding> {
        walk_to(anchor, entries, None)
    }

    fn walk_to(
        anchor: Link,
        entries: &[Sealed],
        recorded: Option<Link>,
    ) -> Result<Summary, Finding> {
        let mut walk = Walk::from(anchor, recorded);
        entries.iter().try_for_each(|e| walk.step(e))?;
        walk.finish(0)
    }

    #[test]
    fn an_intact_chain_verifies_to_its_head() {
        let entries = chain(&genesis(), 5);
        let summary = walk(genesis(), &entries).unwrap();
        assert_eq!(summary.entries, 5);
        assert_eq!(summary.head, entries[4].seal.link());
        assert!(summary.to_string().contains("5 entries verified, seq 1 to 5"), "{summary}");
        let printed = format!("head 5:{}", entries[4].seal.hash);
        assert!(summary.to_string().contains(&printed), "the head is printed as SEQ:HASH");
    }

    #[test]
    fn a_pruned_chain_verifies_from_its_anchor() {
        let entries = chain(&genesis(), 5);
        let anchor = entries[1].seal.link();
        assert_eq!(walk(anchor, &entries[2..]).unwrap().entries, 3);
    }

    #[test]
    fn an_altered_entry_is_reported() {
        let mut entries = chain(&genesis(), 5);
        entries[2].content.detail = Some("nothing to see".into());
        assert_eq!(walk(genesis(), &entries), Err(Finding::Altered { id: 103, seq: 3 }));
    }

    #[test]
    fn a_removed_entry_is_a_gap() {
        let mut entries = chain(&genesis(), 5);
        entries.remove(2);
        let found = walk(genesis(), &entries).unwrap_err();
        assert_eq!(found, Finding::Missing { from: 3, to: 3, id: 104, seq: 4 });
        assert!(found.to_string().contains("seq 3 is missing before entry 104"), "{found}");
    }

    #[test]
    fn a_removed_entry_whose_gap_was_closed_breaks_the_next_link() {
        let mut entries = chain(&genesis(), 5);
        entries.remove(2);
        for e in &mut entries[2..] {
            e.seal.seq -= 1;
        }
        let found = walk(genesis(), &entries).unwrap_err();
        assert_eq!(found, Finding::Unlinked { id: 104, seq: 3, after: Some((102, 2)) });
    }

    #[test]
    fn reordered_entries_break_the_link() {
        let mut entries = chain(&genesis(), 5);
        entries.swap(1, 2);
        (entries[1].seal.seq, entries[2].seal.seq) = (2, 3);
        let found = walk(genesis(), &entries).unwrap_err();
        assert_eq!(found, Finding::Unlinked { id: 103, seq: 2, after: Some((101, 1)) });
    }

    #[test]
    fn a_forged_entry_sealed_in_the_middle_breaks_the_link_after_it() {
        let mut entries = chain(&genesis(), 4);
        let forged = entry(999);
        let seal = entries[1].seal.link().seal(&forged);
        entries.insert(2, Sealed { content: forged, seal });
        for e in &mut entries[3..] {
            e.seal.seq += 1;
        }
        let found = walk(genesis(), &entries).unwrap_err();
        assert_eq!(found, Finding::Unlinked { id: 103, seq: 4, after: Some((999, 3)) });
    }

    #[test]
    fn a_wrong_first_entry_does_not_follow_the_anchor() {
        let entries = chain(&genesis(), 3);
        let anchor = Link { seq: 0, hash: "f".repeat(64) };
        let found = walk(anchor, &entries).unwrap_err();
        assert_eq!(found, Finding::Unlinked { id: 101, seq: 1, after: None });
        assert!(found.to_string().contains("after the anchor"), "{found}");
    }

    #[test]
    fn an_anchor_moved_over_entries_still_present_is_reported() {
        let entries = chain(&genesis(), 3);
        let anchor = entries[1].seal.link();
        let found = walk(anchor, &entries).unwrap_err();
        assert_eq!(found, Finding::BeforeAnchor { id: 101, seq: 1, anchor: 2 });
    }

    #[test]
    fn two_entries_in_one_position_are_reported() {
        let mut entries = chain(&genesis(), 3);
        let copy = entries[1].clone();
        entries.insert(2, copy);
        assert_eq!(walk(genesis(), &entries), Err(Finding::Duplicate { id: 102, seq: 2 }));
    }

    /// Every entry from `from` (0-based) onwards resealed, as someone who knows the encoding
    /// would after altering one.
    fn rewrite_from(entries: &mut [Sealed], from: usize) {
        let mut link = entries[from - 1].seal.link();
        for e in &mut entries[from..] {
            e.seal = link.seal(&e.content);
            link = e.seal.link();
        }
    }

    #[test]
    fn a_rewritten_chain_verifies_alone_but_not_against_a_head_recorded_earlier() {
        let mut entries = chain(&genesis(), 5);
        let recorded = entries[3].seal.link();
        entries[1].content.user_name = Some("mallory".into());
        rewrite_from(&mut entries, 1);
        assert!(walk(genesis(), &entries).is_ok(), "nothing to compare with: it verifies");
        let found = walk_to(genesis(), &entries, Some(recorded)).unwrap_err();
        assert_eq!(found, Finding::Rewritten { id: Some(104), seq: 4 });
        assert!(found.to_string().contains("rewritten"), "{found}");
    }

    #[test]
    fn a_chain_cut_short_of_a_head_recorded_earlier_is_reported() {
        let entries = chain(&genesis(), 5);
        let recorded = entries[4].seal.link();
        let found = walk_to(genesis(), &entries[..3], Some(recorded)).unwrap_err();
        assert_eq!(found, Finding::CutOff { recorded: 5, head: 3 });
    }

    #[test]
    fn a_head_recorded_earlier_is_found_or_known_to_be_pruned() {
        let entries = chain(&genesis(), 5);
        let summary = walk_to(genesis(), &entries, Some(entries[2].seal.link())).unwrap();
        assert_eq!(summary.recorded, Some(Recorded::Found(3)));
        let pruned = walk_to(entries[3].seal.link(), &entries[4..], Some(entries[1].seal.link()));
        assert_eq!(pruned.unwrap().recorded, Some(Recorded::Pruned(2)));
        let anchor = entries[3].seal.link();
        let at_anchor = walk_to(anchor.clone(), &entries[4..], Some(anchor)).unwrap();
        assert_eq!(at_anchor.recorded, Some(Recorded::Found(4)));
        let forged = Link { seq: 4, hash: GENESIS.into() };
        let found = walk_to(entries[3].seal.link(), &entries[4..], Some(forged)).unwrap_err();
        assert_eq!(found, Finding::Rewritten { id: None, seq: 4 });
    }
}
