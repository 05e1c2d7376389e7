//! The audit log's hash chain, write side: every entry is sealed when it settles, with the
//! SHA-256 of its content and of the previous settled entry's hash, so that `vmdeck audit
//! verify` (`audit::chain`) can tell an entry altered, removed, inserted or moved.
//!
//! The chain runs in settlement order: `chain_seq` counts up from the anchor (seq 0 until
//! retention prunes the chain's old end, migrations/0004), `chain_prev` is the hash before,
//! `chain_hash` the entry's own. An entry is sealed in the transaction that settles it, a
//! `BEGIN IMMEDIATE` one: the server's tasks and the CLI in another process append to the same
//! file, and reading the head in a deferred transaction before writing would fail with
//! SQLITE_BUSY whenever another process appended in between. The database's triggers check
//! that each new seal sits on the current head; they cannot compute SHA-256, so the hash
//! itself is checked by verify.
//!
//! The sealed bytes, so that anyone can check a chain without vmdeck: the text
//! `vmdeck audit chain v1`, then the previous hash, then the columns of [`Content`] in their
//! order, each as one field. A field is `0x00` for NULL, `0x01` and 8 bytes big-endian for an
//! integer, or `0x02`, the length in 8 bytes big-endian and the UTF-8 bytes for a text: no
//! value can spill into the next column, and NULL differs from an empty text. The hash is
//! stored as 64 lowercase hex digits.

use sha2::{Digest, Sha256};
use sqlx::{SqliteConnection, SqlitePool};

use crate::domain::{Actor, AuditKind, AuditOutcome};

/// The anchor's hash before retention has pruned anything (migrations/0004).
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How many entries one backfill transaction chains, so the CLI or the server waiting on the
/// write lock never waits long.
const BACKFILL_BATCH: i64 = 500;

/// What an entry's hash covers: every column of `audit_log` but the chain's own. Kind and
/// status are read as text, not as their enums, so an entry altered to hold a value vmdeck
/// does not know can still be read and reported.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Content {
    pub id: i64,
    pub ts: i64,
    pub kind: String,
    pub user_name: Option<String>,
    pub client_addr: Option<String>,
    pub host_name: Option<String>,
    pub vm_uuid: Option<String>,
    pub vm_name: Option<String>,
    pub action: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub detail: Option<String>,
    pub sent_at: Option<i64>,
    pub accepted_at: Option<i64>,
    pub settled_at: Option<i64>,
}

impl Content {
    /// An entry written settled at `now`, by `actor`: no VM, action, error or detail (the
    /// caller adds those), and no id yet ([`append`] gives it one).
    pub fn settled(kind: AuditKind, actor: &Actor, status: AuditOutcome, now: i64) -> Content {
        Content {
            id: 0,
            ts: now,
            kind: kind.as_str().into(),
            user_name: actor.user.clone(),
            client_addr: actor.addr.clone(),
            host_name: None,
            vm_uuid: None,
            vm_name: None,
            action: None,
            status: status.as_str().into(),
            error: None,
            detail: None,
            sent_at: None,
            accepted_at: None,
            settled_at: Some(now),
        }
    }
}

/// The columns of [`Content`], in its order, for SELECTs.
pub const CONTENT_COLUMNS: &str = "id, ts, kind, user_name, client_addr, host_name, vm_uuid, \
     vm_name, action, status, error, detail, sent_at, accepted_at, settled_at";

/// A position in the chain: an entry's, or the anchor's.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Link {
    pub seq: i64,
    pub hash: String,
}

/// An entry's three chain columns: its position, the hash before it, its own hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    pub seq: i64,
    pub prev: String,
    pub hash: String,
}

impl Link {
    /// How `content` is sealed right after this link.
    pub fn seal(&self, content: &Content) -> Seal {
        Seal { seq: self.seq + 1, prev: self.hash.clone(), hash: content.seal(&self.hash) }
    }
}

/// `SEQ:HASH`, as `vmdeck audit verify` prints a head and reads one back (`--head`).
impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl std::str::FromStr for Link {
    type Err = String;

    fn from_str(s: &str) -> Result<Link, String> {
        let (seq, hash) = s.split_once(':').ok_or("expected SEQ:HASH, as verify prints it")?;
        let seq = seq.parse().map_err(|_| format!("{seq:?} is not a seq number"))?;
        if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("{hash:?} is not a hash (64 hex digits)"));
        }
        Ok(Link { seq, hash: hash.to_ascii_lowercase() })
    }
}

impl Seal {
    /// The link this seal makes, for the entry after it.
    pub fn link(&self) -> Link {
        Link { seq: self.seq, hash: self.hash.clone() }
    }
}

impl Content {
    /// The entry's hash, chained after `prev`.
    pub fn seal(&self, prev: &str) -> String {
        let mut h = Sha256::new();
        h.update(b"vmdeck audit chain v1");
        text(&mut h, Some(prev));
        int(&mut h, Some(self.id));
        int(&mut h, Some(self.ts));
        text(&mut h, Some(&self.kind));
        let who_and_what = [
            &self.user_name,
            &self.client_addr,
            &self.host_name,
            &self.vm_uuid,
            &self.vm_name,
            &self.action,
        ];
        for t in who_and_what {
            text(&mut h, t.as_deref());
        }
        text(&mut h, Some(&self.status));
        for t in [&self.error, &self.detail] {
            text(&mut h, t.as_deref());
        }
        for i in [self.sent_at, self.accepted_at, self.settled_at] {
            int(&mut h, i);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn int(h: &mut Sha256, v: Option<i64>) {
    match v {
        None => h.update([0]),
        Some(i) => {
            h.update([1]);
            h.update(i.to_be_bytes());
        }
    }
}

fn text(h: &mut Sha256, v: Option<&str>) {
    match v {
        None => h.update([0]),
        Some(s) => {
            h.update([2]);
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        }
    }
}

/// The chain's newest link: its last entry, or the anchor (the view `audit_chain_head`).
pub async fn head(conn: &mut SqliteConnection) -> sqlx::Result<Link> {
    sqlx::query_as("SELECT seq, hash FROM audit_chain_head").fetch_optional(conn).await?.ok_or_else(
        || {
            sqlx::Error::Protocol(
                "the audit chain has no head: the audit_retention row is missing".into(),
            )
        },
    )
}

/// One entry's content, if it exists.
pub async fn content(conn: &mut SqliteConnection, id: i64) -> sqlx::Result<Option<Content>> {
    sqlx::query_as(&format!("SELECT {CONTENT_COLUMNS} FROM audit_log WHERE id = ?"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Appends an entry written settled (a login, a refusal…) at the end of the chain, in its own
/// write transaction, and returns its id. `content.id` is ignored: the entry takes the next id,
/// which it must know before it is inserted since the hash covers it.
pub async fn append(pool: &SqlitePool, mut content: Content) -> sqlx::Result<i64> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    content.id = next_id(&mut tx).await?;
    let seal = head(&mut tx).await?.seal(&content);
    insert_sealed(&mut tx, &content, &seal).await?;
    tx.commit().await?;
    Ok(content.id)
}

/// The id SQLite would give the next entry; only meaningful inside a write transaction.
async fn next_id(conn: &mut SqliteConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM audit_log").fetch_one(conn).await
}

async fn insert_sealed(conn: &mut SqliteConnection, c: &Content, seal: &Seal) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, ts, kind, user_name, client_addr, host_name, vm_uuid, vm_name,
             action, status, error, detail, sent_at, accepted_at, settled_at,
             chain_seq, chain_prev, chain_hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(c.id)
    .bind(c.ts)
    .bind(&c.kind)
    .bind(&c.user_name)
    .bind(&c.client_addr)
    .bind(&c.host_name)
    .bind(&c.vm_uuid)
    .bind(&c.vm_name)
    .bind(&c.action)
    .bind(&c.status)
    .bind(&c.error)
    .bind(&c.detail)
    .bind(c.sent_at)
    .bind(c.accepted_at)
    .bind(c.settled_at)
    .bind(seal.seq)
    .bind(&seal.prev)
    .bind(&seal.hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// Chains the entries settled before the chain existed (below `chain_from_id`, migrations/0004),
/// in id order, after whatever the chain already holds. Run at every start, by the server and
/// the CLI alike, before either writes: each batch is one `BEGIN IMMEDIATE` transaction that
/// reads what is still unchained, so two processes starting together never chain an entry
/// twice. Returns how many were chained (0 once done, found through the chain's index).
pub async fn backfill(pool: &SqlitePool) -> sqlx::Result<u64> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let batch = unchained_before_chain(&mut tx).await?;
        if batch.is_empty() {
            return Ok(total);
        }
        let mut link = head(&mut tx).await?;
        for content in &batch {
            let seal = link.seal(content);
            seal_settled(&mut tx, content.id, &seal).await?;
            link = seal.link();
        }
        tx.commit().await?;
        total += batch.len() as u64;
        if (batch.len() as i64) < BACKFILL_BATCH {
            return Ok(total);
        }
    }
}

async fn unchained_before_chain(conn: &mut SqliteConnection) -> sqlx::Result<Vec<Content>> {
    sqlx::query_as(&format!(
        "SELECT {CONTENT_COLUMNS} FROM audit_log
         WHERE chain_seq IS NULL AND status NOT IN ('requested', 'sent', 'accepted')
           AND id < (SELECT chain_from_id FROM audit_retention WHERE id = 1)
         ORDER BY id LIMIT ?"
    ))
    .bind(BACKFILL_BATCH)
    .fetch_all(conn)
    .await
}

/// Gives an entry settled before the chain existed its chain position.
async fn seal_settled(conn: &mut SqliteConnection, id: i64, seal: &Seal) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE audit_log SET chain_seq = ?, chain_prev = ?, chain_hash = ?
         WHERE id = ? AND chain_seq IS NULL",
    )
    .bind(seal.seq)
    .bind(&seal.prev)
    .bind(&seal.hash)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> Content {
        let alice = Actor { user: Some("alice".into()), addr: Some("10.0.0.1".into()) };
        Content {
            id: 7,
            ..Content::settled(AuditKind::Login, &alice, AuditOutcome::Ok, 1_700_000_000_000)
        }
    }

    #[test]
    fn a_seal_is_64_hex_digits_and_depends_on_the_previous_hash() {
        let c = login();
        let a = c.seal(GENESIS);
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|ch| ch.is_ascii_hexdigit() && !ch.is_ascii_uppercase()));
        assert_eq!(a, c.seal(GENESIS), "deterministic");
        assert_ne!(a, c.seal(&a), "the previous hash is sealed in");
    }

    #[test]
    fn every_column_is_sealed() {
        let base = login().seal(GENESIS);
        type Change = (&'static str, fn(&mut Content));
        let changes: [Change; 15] = [
            ("id", |c| c.id += 1),
            ("ts", |c| c.ts += 1),
            ("kind", |c| c.kind = "logout".into()),
            ("user_name", |c| c.user_name = Some("mallory".into())),
            ("client_addr", |c| c.client_addr = None),
            ("host_name", |c| c.host_name = Some("lab".into())),
            ("vm_uuid", |c| c.vm_uuid = Some("u".into())),
            ("vm_name", |c| c.vm_name = Some("n".into())),
            ("action", |c| c.action = Some("start".into())),
            ("status", |c| c.status = "refused".into()),
            ("error", |c| c.error = Some("e".into())),
            ("detail", |c| c.detail = Some("d".into())),
            ("sent_at", |c| c.sent_at = Some(1)),
            ("accepted_at", |c| c.accepted_at = Some(1)),
            ("settled_at", |c| c.settled_at = None),
        ];
        for (column, change) in changes {
            let mut c = login();
            change(&mut c);
            assert_ne!(c.seal(GENESIS), base, "changing {column} must change the hash");
        }
    }

    #[test]
    fn values_cannot_shift_between_columns_and_null_is_not_empty() {
        let mut a = login();
        (a.user_name, a.client_addr) = (Some("ab".into()), Some("c".into()));
        let mut b = login();
        (b.user_name, b.client_addr) = (Some("a".into()), Some("bc".into()));
        assert_ne!(a.seal(GENESIS), b.seal(GENESIS), "text moved across a column boundary");

        let mut empty = login();
        empty.detail = Some(String::new());
        assert_ne!(empty.seal(GENESIS), login().seal(GENESIS), "NULL and '' differ");

        let mut moved = login();
        (moved.sent_at, moved.settled_at) = (moved.settled_at, None);
        assert_ne!(moved.seal(GENESIS), login().seal(GENESIS), "a time moved to another column");
    }

    #[test]
    fn a_link_reads_back_as_it_is_printed() {
        let link = Link { seq: 42, hash: login().seal(GENESIS) };
        assert_eq!(link.to_string().parse::<Link>(), Ok(link.clone()));
        assert_eq!(format!("42:{}", link.hash.to_uppercase()).parse::<Link>(), Ok(link));
        for bad in ["", "42", "x:abc", &format!("42:{}", "g".repeat(64)), "42:abcd"] {
            assert!(bad.parse::<Link>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn a_seal_follows_its_predecessor() {
        let anchor = Link { seq: 41, hash: GENESIS.into() };
        let seal = anchor.seal(&login());
        assert_eq!((seal.seq, seal.prev.as_str()), (42, GENESIS));
        assert_eq!(seal.hash, login().seal(GENESIS));
        assert_eq!(seal.link(), Link { seq: 42, hash: seal.hash.clone() });
    }
}
