#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::sync::Arc;

use crypto::SecureRng;

use super::*;
use crate::env::{system_clock, Env};

fn env() -> Arc<Env> {
    Env::new(system_clock(), SecureRng::from_seed_u64(7))
}

fn code_of(_: &NodeError) -> &'static str {
    "INTERNAL"
}

fn call(i: usize) -> ::audit::Record {
    ::audit::Record {
        seq: 0,
        prev: String::new(),
        time_ms: 0,
        node: 1,
        service: "kms".into(),
        operation: "Encrypt".into(),
        principal: Some("client/app".into()),
        forwarded_by: None,
        key: Some("alias/k".into()),
        key_id: None,
        version: None,
        context: Default::default(),
        code: "OK".into(),
        outcome: "ok".into(),
        request_id: format!("r{i}"),
        peer: None,
        retained_from: None,
        hash: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_form_one_durable_chain_that_a_restart_continues() {
    let dir = tempfile::tempdir().unwrap();
    let open = || AuditLog::open(1, env(), Box::new(FileStore::open(dir.path(), 4096).unwrap()), 0, code_of).unwrap();
    let log = open();
    // Ten waves of twenty concurrent calls: at least ten batches, each past a segment's size.
    for wave in 0..10 {
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(call(wave * 20 + i)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }
    assert_eq!(log.head().0, 200);
    // Small segments: the records span several files, and the chain runs across them.
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(files > 1, "{files} segment files");
    let lines = log.read(0, usize::MAX).await.unwrap().0;
    let head = ::audit::Head { seq: 200, hash: log.head().1 };
    let v = ::audit::verify(1, &lines, Some(&head)).unwrap();
    assert_eq!((v.first, v.last, v.head_matched), (Some(1), Some(200), true));
    // Every call's record is there once.
    let mut ids: Vec<String> =
        lines.iter().map(|l| serde_json::from_str::<::audit::Record>(&l.text).unwrap().request_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);

    // A restart continues the chain where it ended.
    drop(log);
    let log = open();
    assert_eq!(log.head(), head_tuple(&head));
    log.append(call(200)).await.unwrap();
    let lines = log.read(0, usize::MAX).await.unwrap().0;
    assert_eq!(::audit::verify(1, &lines, Some(&head)).unwrap().last, Some(201));
    let (page, total) = log.read(150, 10).await.unwrap();
    assert_eq!((page.len(), total), (10, 201));
}

fn head_tuple(h: &::audit::Head) -> (u64, String) {
    (h.seq, h.hash.clone())
}

#[tokio::test]
async fn a_torn_last_record_is_cut_off_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(1, env(), Box::new(FileStore::open(dir.path(), 1 << 20).unwrap()), 0, code_of).unwrap();
    log.append(call(1)).await.unwrap();
    log.append(call(2)).await.unwrap();
    let head = log.head();
    drop(log);
    // A crash in the middle of writing the third record.
    let file = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
    let mut f = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
    io::Write::write_all(&mut f, b"{\"seq\":3,\"prev\":\"ab").unwrap();
    let log = AuditLog::open(1, env(), Box::new(FileStore::open(dir.path(), 1 << 20).unwrap()), 0, code_of).unwrap();
    assert_eq!(log.head(), head);
    log.append(call(3)).await.unwrap();
    assert!(::audit::verify(1, &log.read(0, usize::MAX).await.unwrap().0, None).is_ok());
}

/// A log in `dir` that wrote the records `1..=n` and stopped: its head, its one segment and
/// where that segment's records end (the zero-filled tail starts).
async fn stopped_after(dir: &std::path::Path, n: usize) -> ((u64, String), std::path::PathBuf, u64) {
    let log = AuditLog::open(1, env(), Box::new(FileStore::open(dir, 1 << 20).unwrap()), 0, code_of).unwrap();
    for i in 1..=n {
        log.append(call(i)).await.unwrap();
    }
    let head = log.head();
    drop(log);
    let file = std::fs::read_dir(dir).unwrap().next().unwrap().unwrap().path();
    let bytes = std::fs::read(&file).unwrap();
    let records = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    assert!(bytes.len() > records && bytes[records..].iter().all(|b| *b == 0), "the open segment is zero-filled ahead");
    (head, file, records as u64)
}

/// Writes `bytes` at `offset` of `file`, as a crash left them.
fn scribble(file: &std::path::Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, bytes, offset).unwrap();
}

/// Reopens the log in `dir`: it continues from `head` with the records `from..=to`, and its
/// chain verifies with `to` records.
async fn continues(dir: &std::path::Path, head: (u64, String), from: usize, to: usize) {
    let log = AuditLog::open(1, env(), Box::new(FileStore::open(dir, 1 << 20).unwrap()), 0, code_of).unwrap();
    assert_eq!(log.head(), head);
    for i in from..=to {
        log.append(call(i)).await.unwrap();
    }
    let lines = log.read(0, usize::MAX).await.unwrap().0;
    assert_eq!(lines.len(), to, "{lines:?}");
    assert_eq!(::audit::verify(1, &lines, None).unwrap().last, Some(to as u64));
}

/// The realistic crash: the batch was being written over the zero-filled tail when the node
/// stopped, so a fragment of a record sits between the records and the zeros.
#[tokio::test]
async fn a_record_torn_inside_the_zero_filled_tail_is_cut_off_and_zeroed() {
    let dir = tempfile::tempdir().unwrap();
    let (head, file, records) = stopped_after(dir.path(), 2).await;
    scribble(&file, records, b"{\"seq\":3,\"prev\":\"ab");
    continues(dir.path(), head, 3, 4).await;
    let text = String::from_utf8(std::fs::read(&file).unwrap()).unwrap();
    assert!(!text.contains("\"ab"), "the fragment is gone");
}

/// A power loss may tear the batch being written at sector granularity: its end written, a
/// block of its middle still zeros. No synced record holds a NUL, so that batch is cut off.
#[tokio::test]
async fn a_batch_with_a_hole_of_zeros_is_cut_off_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (head, file, records) = stopped_after(dir.path(), 1).await;
    // "{\"seq\":2,…" then 600 bytes never written, then the batch's tail and its newline.
    scribble(&file, records, b"{\"seq\":2,\"prev\":\"ab");
    scribble(&file, records + 620, b"\"cd\"}\n");
    continues(dir.path(), head, 2, 2).await;
}

#[tokio::test]
async fn a_closed_segment_holds_its_records_only() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(1, env(), Box::new(FileStore::open(dir.path(), 600).unwrap()), 0, code_of).unwrap();
    for i in 0..10 {
        log.append(call(i)).await.unwrap();
    }
    let mut files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() > 2, "{files:?}");
    files.pop();
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.contains(&0) && bytes.ends_with(b"\n"), "{}", f.display());
    }
    assert_eq!(::audit::verify(1, &log.read(0, usize::MAX).await.unwrap().0, None).unwrap().last, Some(10));
}

/// A disk that fails after `ok` appends.
#[derive(Debug)]
struct Failing {
    inner: MemoryStore,
    ok: usize,
}

impl AuditStore for Failing {
    fn append(&mut self, first_seq: u64, lines: &[u8]) -> io::Result<()> {
        if self.ok == 0 {
            return Err(io::Error::other("disk full"));
        }
        self.ok -= 1;
        self.inner.append(first_seq, lines)
    }
    fn read(&self) -> io::Result<Vec<::audit::Line>> {
        self.inner.read()
    }
    fn last(&self) -> io::Result<Option<String>> {
        self.inner.last()
    }
    fn retain(&mut self, keep: usize) -> io::Result<Option<u64>> {
        self.inner.retain(keep)
    }
    fn blocking(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn a_log_that_cannot_be_written_refuses_every_call_from_then_on() {
    let store = Failing { inner: MemoryStore::default(), ok: 1 };
    let log = AuditLog::open(1, env(), Box::new(store), 0, code_of).unwrap();
    log.append(call(1)).await.unwrap();
    let e = log.append(call(2)).await.unwrap_err();
    assert!(matches!(&e, NodeError::Unavailable(m) if m.contains("disk full")), "{e:?}");
    // Still refused: the chain on disk may be broken, so nothing more is written.
    assert!(log.append(call(3)).await.is_err());
    assert_eq!(log.head().0, 1);
}

#[tokio::test]
async fn retention_deletes_old_segments_and_says_so_in_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(1, env(), Box::new(FileStore::open(dir.path(), 600).unwrap()), 2, code_of).unwrap();
    for i in 0..30 {
        log.append(call(i)).await.unwrap();
    }
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(files <= 3, "{files} segment files kept");
    let lines = log.read(0, usize::MAX).await.unwrap().0;
    let v = ::audit::verify(1, &lines, None).unwrap();
    assert!(v.first.unwrap() > 1, "{v:?}");
    assert!(lines.iter().any(|l| l.text.contains(::audit::RETENTION)));
}
