//! Where a node's audit records live: files on its disk ([`FileStore`]), or memory that
//! outlives the node's process ([`MemoryStore`], the simulator's disk).
//!
//! Files are segments named by their first sequence number (`audit-00000000000000000001.jsonl`),
//! one JSON record per line. A segment is closed once it passes `segment_bytes`; with
//! `retain_segments` set, the oldest closed segments beyond that many are deleted, and the log
//! writes a retention record naming the first sequence number it keeps.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A node's audit records, appended in batches.
pub trait AuditStore: Send + std::fmt::Debug {
    /// Appends `lines` (each a record whose first sequence number is `first_seq`, with its
    /// newline) and makes them durable before returning.
    fn append(&mut self, first_seq: u64, lines: &[u8]) -> io::Result<()>;
    /// Every record kept, as (place, line) in order.
    fn read(&self) -> io::Result<Vec<::audit::Line>>;
    /// The last record's line, if any.
    fn last(&self) -> io::Result<Option<String>>;
    /// Deletes whole segments before the newest `keep`; returns the first sequence number
    /// kept if it deleted any.
    fn retain(&mut self, keep: usize) -> io::Result<Option<u64>>;
    /// Whether `append` blocks on the disk (then it runs off the async threads).
    fn blocking(&self) -> bool;
}

/// Segments in a directory.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    segment_bytes: u64,
    /// The open segment and its size.
    current: Option<(File, u64)>,
}

fn segment_name(first_seq: u64) -> String {
    format!("audit-{first_seq:020}.jsonl")
}

fn first_seq_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("audit-")?.strip_suffix(".jsonl")?.parse().ok()
}

impl FileStore {
    /// Opens (creating) `dir`. A last line without its newline was being written when the
    /// node stopped: its call was never answered (a record is durable before its answer), so
    /// it is cut off.
    pub fn open(dir: &Path, segment_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut store = Self { dir: dir.to_path_buf(), segment_bytes: segment_bytes.max(1), current: None };
        if let Some(last) = store.segments()?.pop() {
            let file = OpenOptions::new().read(true).append(true).open(&last)?;
            let text = fs::read(&last)?;
            let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            if whole < text.len() {
                tracing::warn!(file = %last.display(), bytes = text.len() - whole, "audit: cutting off a torn last record");
                file.set_len(whole as u64)?;
                file.sync_all()?;
            }
            store.current = Some((file, whole as u64));
        }
        Ok(store)
    }

    /// The segment files, oldest first.
    fn segments(&self) -> io::Result<Vec<PathBuf>> {
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if let Some(seq) = first_seq_of(&path) {
                found.push((seq, path));
            }
        }
        found.sort();
        Ok(found.into_iter().map(|(_, p)| p).collect())
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl AuditStore for FileStore {
    fn append(&mut self, first_seq: u64, lines: &[u8]) -> io::Result<()> {
        if self.current.as_ref().is_none_or(|(_, size)| *size >= self.segment_bytes) {
            let path = self.dir.join(segment_name(first_seq));
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            self.sync_dir()?;
            self.current = Some((file, 0));
        }
        let Some((file, size)) = self.current.as_mut() else { return Err(io::Error::other("no open segment")) };
        file.write_all(lines)?;
        file.sync_data()?;
        *size += lines.len() as u64;
        Ok(())
    }

    fn read(&self) -> io::Result<Vec<::audit::Line>> {
        let mut out = Vec::new();
        for path in self.segments()? {
            let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            for (i, line) in BufReader::new(File::open(&path)?).lines().enumerate() {
                out.push(::audit::Line { place: ::audit::Place { file: file.clone(), line: i + 1 }, text: line? });
            }
        }
        Ok(out)
    }

    fn last(&self) -> io::Result<Option<String>> {
        for path in self.segments()?.iter().rev() {
            let text = fs::read_to_string(path)?;
            if let Some(line) = text.lines().next_back() {
                return Ok(Some(line.to_string()));
            }
        }
        Ok(None)
    }

    fn retain(&mut self, keep: usize) -> io::Result<Option<u64>> {
        let segments = self.segments()?;
        if keep == 0 || segments.len() <= keep {
            return Ok(None);
        }
        let cut = segments.len() - keep;
        for path in &segments[..cut] {
            fs::remove_file(path)?;
        }
        self.sync_dir()?;
        Ok(first_seq_of(&segments[cut]))
    }

    fn blocking(&self) -> bool {
        true
    }
}

/// Records in memory, shared with whoever made it (the simulator keeps it across a node's
/// restarts, as a disk would).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore(Arc<Mutex<Vec<String>>>);

impl MemoryStore {
    fn lines(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AuditStore for MemoryStore {
    fn append(&mut self, _first_seq: u64, lines: &[u8]) -> io::Result<()> {
        let text = std::str::from_utf8(lines).map_err(io::Error::other)?;
        self.lines().extend(text.lines().map(str::to_string));
        Ok(())
    }

    fn read(&self) -> io::Result<Vec<::audit::Line>> {
        Ok(self
            .lines()
            .iter()
            .enumerate()
            .map(|(i, text)| ::audit::Line {
                place: ::audit::Place { file: "memory".into(), line: i + 1 },
                text: text.clone(),
            })
            .collect())
    }

    fn last(&self) -> io::Result<Option<String>> {
        Ok(self.lines().last().cloned())
    }

    fn retain(&mut self, _keep: usize) -> io::Result<Option<u64>> {
        Ok(None)
    }

    fn blocking(&self) -> bool {
        false
    }
}
