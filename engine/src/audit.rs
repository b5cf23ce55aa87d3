//! The tamper-evident audit log (DESIGN §6.4).
//!
//! Every decision, URL mint, policy reload, admin call and security event is one JSON line. Lines
//! are hash-chained: each carries `seq`, the previous line's hash as `prev`, and `hash` = SHA-256 of
//! the line's body (everything after the hash, which includes `prev`). Changing any byte, deleting a
//! line or reordering lines breaks the chain, and `verify` names the first broken line.
//!
//! A background writer batches records to the sink (file, stdout or the database's
//! `audit_records`). The queue is bounded: when the writer falls behind, callers wait (up to a
//! bound, then fail closed) instead of records being dropped. Critical records are acknowledged
//! only once written and synced; the caller denies if that fails.
//!
//! No emails, tokens, signed URLs or passwords are ever put into a record; callers pass ids.

mod sink;

use std::borrow::Cow;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ring::digest;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

pub use sink::{AuditSink, SinkConfig, database_lines, file_path};

use crate::error::{Error, Result};
use crate::ids::EntityRef;

/// Hash that precedes the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How important a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Routine.
    #[default]
    Info,
    /// Worth a look (denials of probes, rejected reloads).
    Warning,
    /// Break-glass decisions and security violations.
    Critical,
}

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// An authorization decision.
    Decision,
    /// A signed media URL was minted.
    MediaUrl,
    /// A policy store was reloaded (or a reload rejected).
    PolicyReload,
    /// An administrative call.
    Admin,
    /// The violation detector fired.
    SecurityViolation,
}

/// One audit record, before chaining.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Record id (the decision id for decisions), UUIDv7.
    pub id: Uuid,
    /// Epoch milliseconds.
    pub time_ms: i64,
    /// What happened.
    pub kind: RecordKind,
    /// Severity.
    pub severity: Severity,
    /// Policy store.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub store: Option<Arc<str>>,
    /// Store policy version.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub policy_version: Option<Arc<str>>,
    /// Data revision the decision reflects.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub revision: Option<i64>,
    /// Principal entity.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub principal: Option<Subject>,
    /// Action.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub action: Option<Arc<str>>,
    /// Resource entity.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub resource: Option<Subject>,
    /// `allow` or `deny`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub decision: Option<Cow<'static, str>>,
    /// Why a deny: `no_permit`, `forbidden`, `not_found`, `invalid`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub deny_kind: Option<Cow<'static, str>>,
    /// Determining policy ids.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub policies: Vec<Arc<str>>,
    /// Policy evaluation errors.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<String>,
    /// Cache tier that served the decision.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cache_tier: Option<Cow<'static, str>>,
    /// Evaluation latency in microseconds.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub latency_us: Option<u64>,
    /// Caller's request id.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request_id: Option<String>,
    /// Client IP truncated to /24 (IPv4) or /48 (IPv6).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_ip: Option<String>,
    /// Break-glass justification.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub justification: Option<String>,
    /// Free-form detail (never secrets).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

impl AuditRecord {
    /// An empty record of `kind` at `time_ms`.
    pub fn new(kind: RecordKind, time_ms: i64) -> Self {
        Self::with_id(Uuid::now_v7(), kind, time_ms)
    }

    /// An empty record with a given id (a decision's).
    pub fn with_id(id: Uuid, kind: RecordKind, time_ms: i64) -> Self {
        Self {
            id,
            time_ms,
            kind,
            severity: Severity::Info,
            store: None,
            policy_version: None,
            revision: None,
            principal: None,
            action: None,
            resource: None,
            decision: None,
            deny_kind: None,
            policies: Vec::new(),
            errors: Vec::new(),
            cache_tier: None,
            latency_us: None,
            request_id: None,
            client_ip: None,
            justification: None,
            detail: None,
        }
    }
}

/// Who or what a record is about. Velro entities are formatted by the writer, off the request
/// path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A Velro entity.
    Entity(EntityRef),
    /// Anything else, already as text.
    Text(String),
}

impl Serialize for Subject {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::Entity(e) => serializer.collect_str(e),
            Self::Text(t) => serializer.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for Subject {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::Text)
    }
}

/// A client address with the host part removed: /24 for IPv4, /48 for IPv6.
pub fn truncate_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    seq: i64,
    prev: &'a str,
    #[serde(flatten)]
    record: &'a AuditRecord,
}

/// Where a chain stands: the last line's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Sequence number of the last line (0 before the first).
    pub seq: i64,
    /// Hash of the last line (`GENESIS` before the first).
    pub hash: String,
}

impl Default for ChainHead {
    fn default() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

impl ChainHead {
    /// Append `record`: the new line, and the head moves to it.
    pub fn append(&mut self, record: &AuditRecord) -> Result<String> {
        let seq = self.seq + 1;
        let body = serde_json::to_string(&Body {
            seq,
            prev: &self.hash,
            record,
        })
        .map_err(|e| Error::Audit(format!("cannot encode record: {e}")))?;
        let hash = hex::encode(digest::digest(&digest::SHA256, body.as_bytes()));
        // `{"hash":"…",` followed by the body without its opening brace.
        let line = format!("{{\"hash\":\"{hash}\",{}", &body[1..]);
        self.seq = seq;
        self.hash = hash;
        Ok(line)
    }

    /// The head after `line`, which must be a well-formed chained line.
    pub fn from_line(line: &str) -> Result<Self> {
        let parsed = parse_line(line).map_err(|why| Error::Audit(why.to_owned()))?;
        Ok(Self {
            seq: parsed.seq,
            hash: parsed.hash.to_owned(),
        })
    }
}

struct ParsedLine<'a> {
    hash: &'a str,
    seq: i64,
    prev: String,
}

const HASH_PREFIX: &str = "{\"hash\":\"";

fn parse_line(line: &str) -> std::result::Result<ParsedLine<'_>, &'static str> {
    let rest = line
        .strip_prefix(HASH_PREFIX)
        .ok_or("not a chained record")?;
    let hash = rest.get(..64).ok_or("truncated hash")?;
    if !hash
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err("malformed hash");
    }
    let after = rest.get(64..).ok_or("truncated record")?;
    let body_rest = after.strip_prefix("\",").ok_or("malformed record")?;
    let body = format!("{{{body_rest}");
    let actual = hex::encode(digest::digest(&digest::SHA256, body.as_bytes()));
    if actual != hash {
        return Err("hash does not match the record");
    }
    #[derive(Deserialize)]
    struct Head {
        seq: i64,
        prev: String,
    }
    let head: Head = serde_json::from_str(&body).map_err(|_| "record is not valid JSON")?;
    Ok(ParsedLine {
        hash,
        seq: head.seq,
        prev: head.prev,
    })
}

/// The outcome of verifying a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Lines checked.
    pub records: usize,
    /// The first broken line: 1-based line number and why.
    pub first_broken: Option<(usize, String)>,
}

impl VerifyReport {
    /// Whether the whole chain is intact.
    pub fn ok(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// Verify chained lines from the start of a chain (`seq` 1 after `GENESIS`).
pub fn verify_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> VerifyReport {
    let mut head = ChainHead::default();
    let mut records = 0;
    for (index, line) in lines.into_iter().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            return VerifyReport {
                records,
                first_broken: Some((number, "empty line".into())),
            };
        }
        let parsed = match parse_line(line) {
            Ok(parsed) => parsed,
            Err(why) => {
                return VerifyReport {
                    records,
                    first_broken: Some((number, why.into())),
                };
            }
        };
        if parsed.seq != head.seq + 1 {
            return VerifyReport {
                records,
                first_broken: Some((
                    number,
                    format!(
                        "sequence {} where {} was expected (a record is missing or out of order)",
                        parsed.seq,
                        head.seq + 1
                    ),
                )),
            };
        }
        if parsed.prev != head.hash {
            return VerifyReport {
                records,
                first_broken: Some((
                    number,
                    "`prev` does not match the previous record's hash".into(),
                )),
            };
        }
        head = ChainHead {
            seq: parsed.seq,
            hash: parsed.hash.to_owned(),
        };
        records += 1;
    }
    VerifyReport {
        records,
        first_broken: None,
    }
}

/// Verify an audit file.
pub fn verify_file(path: &Path) -> Result<VerifyReport> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(verify_lines(text.lines()))
}

struct Envelope {
    record: AuditRecord,
    ack: Option<oneshot::Sender<std::result::Result<(), String>>>,
}

/// Audit log settings.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Where records go.
    pub sink: SinkConfig,
    /// Records queued before callers wait.
    pub queue: usize,
    /// Most records written per batch.
    pub batch: usize,
    /// Longest a caller waits for room in the queue before failing closed.
    pub enqueue_timeout: Duration,
}

impl AuditConfig {
    /// Defaults for `sink`.
    pub fn new(sink: SinkConfig) -> Self {
        Self {
            sink,
            queue: 16_384,
            batch: 512,
            enqueue_timeout: Duration::from_secs(5),
        }
    }
}

/// Handle to the audit writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Envelope>,
    /// Wakes the writer at once for durable records; others wait for the next flush tick, so a
    /// busy PDP does not pay a cross-thread wake-up per decision.
    urgent: Arc<tokio::sync::Notify>,
    capacity: usize,
    enqueue_timeout: Duration,
}

/// How often the writer drains the queue when nothing urgent wakes it.
const FLUSH_INTERVAL: Duration = Duration::from_millis(5);

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("id", &self.record.id)
            .finish()
    }
}

impl AuditLog {
    /// Open the sink (continuing its chain) and start the writer task. The writer stops, after
    /// writing everything queued, when every handle is dropped; `shutdown` waits for that.
    pub async fn start(config: AuditConfig) -> Result<(Self, AuditWriter)> {
        let mut sink = AuditSink::open(&config.sink).await?;
        let head = sink.head().await?;
        let (tx, rx) = mpsc::channel(config.queue);
        let batch = config.batch.max(1);
        let urgent = Arc::new(tokio::sync::Notify::new());
        let wake = Arc::clone(&urgent);
        let handle = tokio::spawn(async move { write_loop(rx, wake, sink, head, batch).await });
        Ok((
            Self {
                tx,
                urgent,
                capacity: config.queue,
                enqueue_timeout: config.enqueue_timeout,
            },
            AuditWriter { handle },
        ))
    }

    /// Queue a record. Waits while the queue is full; fails (closed) if it stays full.
    pub async fn record(&self, record: AuditRecord) -> Result<()> {
        self.enqueue(Envelope { record, ack: None }).await
    }

    /// Write a record and wait until it is durably written. For critical records: if this fails,
    /// the caller must not act on the decision.
    pub async fn record_durably(&self, record: AuditRecord) -> Result<()> {
        let (ack, done) = oneshot::channel();
        self.enqueue(Envelope {
            record,
            ack: Some(ack),
        })
        .await?;
        self.urgent.notify_one();
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Audit(e)),
            Err(_) => Err(Error::Audit("the audit writer stopped".into())),
        }
    }

    async fn enqueue(&self, envelope: Envelope) -> Result<()> {
        metrics::gauge!("velro_audit_queue_depth").set(self.depth() as f64);
        // Fast path without a timer; wait (bounded) only when the queue is full.
        let envelope = match self.tx.try_send(envelope) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(Error::Unavailable("the audit log is closed".into()));
            }
            Err(mpsc::error::TrySendError::Full(envelope)) => envelope,
        };
        self.tx
            .send_timeout(envelope, self.enqueue_timeout)
            .await
            .map_err(|e| match e {
                mpsc::error::SendTimeoutError::Timeout(_) => {
                    Error::Unavailable("the audit log is not keeping up".into())
                }
                mpsc::error::SendTimeoutError::Closed(_) => {
                    Error::Unavailable("the audit log is closed".into())
                }
            })
    }

    /// Records waiting to be written.
    pub fn depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }
}

/// The running writer task.
#[derive(Debug)]
pub struct AuditWriter {
    handle: tokio::task::JoinHandle<()>,
}

impl AuditWriter {
    /// Wait until every queued record is written (call after dropping all `AuditLog` handles).
    pub async fn finished(self) {
        if let Err(e) = self.handle.await {
            tracing::error!(error = %e, "audit writer ended abnormally");
        }
    }
}

/// Take up to `batch` queued records; `None` once the log is closed and drained.
fn drain(
    rx: &mut mpsc::Receiver<Envelope>,
    pending: &mut Vec<Envelope>,
    batch: usize,
) -> Option<()> {
    while pending.len() < batch {
        match rx.try_recv() {
            Ok(envelope) => pending.push(envelope),
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                return (!pending.is_empty()).then_some(());
            }
        }
    }
    Some(())
}

async fn write_loop(
    mut rx: mpsc::Receiver<Envelope>,
    urgent: Arc<tokio::sync::Notify>,
    mut sink: AuditSink,
    mut head: ChainHead,
    batch: usize,
) {
    let mut pending: Vec<Envelope> = Vec::with_capacity(batch);
    loop {
        if drain(&mut rx, &mut pending, batch).is_none() {
            break;
        }
        if pending.is_empty() {
            tokio::select! {
                () = tokio::time::sleep(FLUSH_INTERVAL) => {}
                () = urgent.notified() => {}
            }
            continue;
        }
        let durable = pending.iter().any(|e| e.ack.is_some());
        let mut lines = Vec::with_capacity(pending.len());
        let start = head.clone();
        let mut encode_error = None;
        for envelope in &pending {
            match head.append(&envelope.record) {
                Ok(line) => lines.push((head.seq, line)),
                Err(e) => {
                    encode_error = Some(e.to_string());
                    break;
                }
            }
        }
        let result = match encode_error {
            Some(e) => Err(e),
            None => write_with_retry(&mut sink, &lines, durable).await,
        };
        if result.is_err() {
            // Nothing of the batch is in the chain; the next batch continues from here.
            head = start;
        }
        metrics::counter!("velro_audit_records_total").increment(lines.len() as u64);
        for envelope in pending.drain(..) {
            if let Some(ack) = envelope.ack {
                // The caller may have given up waiting; nothing to do then.
                let _ = ack.send(result.clone());
            }
        }
    }
    if let Err(e) = sink.close().await {
        tracing::error!(error = %e, "cannot close the audit sink");
    }
}

/// Write a batch; non-durable batches are retried a few times before their records are reported
/// lost (loudly), durable ones fail at once so the caller can deny.
async fn write_with_retry(
    sink: &mut AuditSink,
    lines: &[(i64, String)],
    durable: bool,
) -> std::result::Result<(), String> {
    let attempts = if durable { 1 } else { 5 };
    let mut delay = Duration::from_millis(50);
    for attempt in 1..=attempts {
        match sink.write(lines, durable).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt == attempts => {
                metrics::counter!("velro_audit_write_failures_total").increment(1);
                tracing::error!(error = %e, records = lines.len(), "AUDIT RECORDS COULD NOT BE WRITTEN");
                return Err(e.to_string());
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "audit write failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    Err("no attempt made".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: i64) -> AuditRecord {
        let mut r = AuditRecord::new(RecordKind::Decision, 1_700_000_000_000 + n);
        r.principal = Some(Subject::Text(format!("Velro::User::\"{n}\"")));
        r.decision = Some(Cow::Borrowed("allow"));
        r
    }

    fn chain(n: i64) -> Vec<String> {
        let mut head = ChainHead::default();
        (1..=n).map(|i| head.append(&record(i)).unwrap()).collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let lines = chain(5);
        let report = verify_lines(lines.iter().map(String::as_str));
        assert_eq!(
            report,
            VerifyReport {
                records: 5,
                first_broken: None
            }
        );
        assert!(lines[0].starts_with("{\"hash\":\""));
        assert!(lines[0].contains(&format!("\"prev\":\"{GENESIS}\"")));
    }

    #[test]
    fn changing_any_byte_is_detected_at_that_record() {
        let lines = chain(4);
        for (i, line) in lines.iter().enumerate() {
            for pos in 0..line.len() {
                let mut bytes = line.clone().into_bytes();
                bytes[pos] = if bytes[pos] == b'1' { b'2' } else { b'1' };
                let Ok(tampered) = String::from_utf8(bytes) else {
                    continue;
                };
                if tampered == *line {
                    continue;
                }
                let mut copy = lines.clone();
                copy[i] = tampered;
                let report = verify_lines(copy.iter().map(String::as_str));
                assert_eq!(
                    report.first_broken.as_ref().map(|(n, _)| *n),
                    Some(i + 1),
                    "byte {pos} of record {}",
                    i + 1
                );
            }
        }
    }

    #[test]
    fn deleting_or_swapping_records_is_detected() {
        let lines = chain(5);
        let mut deleted = lines.clone();
        deleted.remove(2);
        let report = verify_lines(deleted.iter().map(String::as_str));
        assert_eq!(report.first_broken.map(|(n, _)| n), Some(3));

        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        let report = verify_lines(swapped.iter().map(String::as_str));
        assert_eq!(report.first_broken.map(|(n, _)| n), Some(2));

        let mut first_gone = lines;
        first_gone.remove(0);
        let report = verify_lines(first_gone.iter().map(String::as_str));
        assert_eq!(report.first_broken.map(|(n, _)| n), Some(1));
    }

    #[test]
    fn ips_are_truncated() {
        assert_eq!(
            truncate_ip("203.0.113.77".parse().unwrap()),
            "203.0.113.0/24"
        );
        assert_eq!(
            truncate_ip("2001:db8:abcd:12::1".parse().unwrap()),
            "2001:db8:abcd::/48"
        );
    }
}
