//! The store's engine: an append-only log of key-value records with group commit and
//! compaction in the background.
//!
//! Appends from every connection go into one buffer; a writer thread writes the buffer and
//! syncs it, then tells everyone how far the log is durable. An acknowledgement that depends
//! on a record waits for that point: one `fdatasync` serves every record that arrived while
//! the previous one ran (group commit), so the cost per message falls as the load rises.
//!
//! Compaction copies the live records of the older segments into a new one while appends go
//! on into the active segment, then switches the manifest: there is no pause of the broker,
//! whatever the size of the store. Every record carries its sequence number, and the record
//! with the highest one wins when the store is read, so the order of segments never decides.
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use super::log::{self, Damage, Kind, ManifestError};

/// A segment is closed and a new one started past this size.
const SEGMENT_MAX: u64 = 64 * 1024 * 1024;
/// Compaction starts once the files hold this much more than the live records, and twice
/// as much.
const COMPACT_SLACK: u64 = 16 * 1024 * 1024;

/// When appends become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every acknowledgement waits for its records to be synced to disk (`fdatasync`):
    /// nothing acknowledged is lost, even on power loss.
    EveryAck,
    /// Records are written (to the operating system) before acknowledgements go, and synced
    /// to disk at this interval: a killed broker loses nothing, a power loss up to this much.
    Interval(Duration),
}

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The store's directory (created if missing).
    pub dir: PathBuf,
    /// When appends become durable.
    pub sync: SyncPolicy,
    /// A store that cannot be read at all is moved aside (renamed with `.bad-TIME`) and a new
    /// one started, instead of refusing to start.
    pub set_aside_unreadable: bool,
    /// Start empty: what the store holds is moved aside (to the directory's name with
    /// `.removed` appended, replacing an earlier one) once the store is locked. For a
    /// mosquitto user's reset: removing the database file while the broker is stopped.
    pub reset: bool,
}

/// Why a store cannot be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file or directory cannot be read, written or created.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// Another process uses the store.
    #[error("{path} is in use by another process (another midge broker?)")]
    Locked {
        /// The store's directory.
        path: PathBuf,
    },
    /// The manifest cannot be read.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A segment the manifest names is missing.
    #[error("{path} is missing (named by the store's manifest)")]
    MissingSegment {
        /// The segment.
        path: PathBuf,
    },
    /// A segment is not a segment.
    #[error("{path} is not a midge store segment")]
    NotASegment {
        /// The segment.
        path: PathBuf,
    },
}

/// What opening the store found.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Segments read.
    pub segments: usize,
    /// Records read.
    pub records: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Damage found, by segment file.
    pub damage: Vec<(PathBuf, Damage)>,
    /// A store that could not be read and was moved aside, if one was.
    pub set_aside: Option<(PathBuf, String)>,
    /// Where a store opened with [`StoreOptions::reset`] was moved.
    pub reset_to: Option<PathBuf>,
    /// How long reading took.
    pub elapsed: Duration,
}

/// The live records of a store, by key.
pub type Records = BTreeMap<Bytes, Bytes>;

/// One change to the store.
#[derive(Debug, Clone)]
pub enum Op {
    /// Sets a key's value.
    Put(Vec<u8>, Vec<u8>),
    /// Removes a key.
    Delete(Vec<u8>),
}

#[derive(Debug)]
struct Live {
    seq: u64,
    size: u32,
}

#[derive(Debug)]
pub(super) struct State {
    /// The last sequence number given out.
    seq: u64,
    /// Records appended and not yet taken by the writer.
    pending: Vec<u8>,
    /// The live keys, with the sequence number and size of their record.
    keys: HashMap<Box<[u8]>, Live>,
    live_bytes: u64,
    /// Bytes in the segment files, live or not.
    total_bytes: u64,
    /// The segments in use, oldest first; the last is the active one.
    segments: Vec<u64>,
    /// Bytes in the active segment, counting what is pending.
    active_bytes: u64,
    next_segment: u64,
    compacting: bool,
    compact_requested: bool,
    sync_requested: bool,
    stop: bool,
    /// A write error, reported once until writes work again.
    failing: Option<String>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    policy: SyncPolicy,
    state: Mutex<State>,
    wake: Condvar,
    /// The highest sequence number acknowledgements may rely on.
    durable: AtomicU64,
    /// Bytes appended that the writer has not taken yet (see [`Store::backlogged`]).
    backlog: AtomicU64,
    /// Told whenever `durable` moves.
    durable_moved: tokio::sync::Notify,
    /// Tells `close` that a compaction finished.
    compacted: Condvar,
}

/// Bytes waiting for the writer past which the clients that wrote them wait too.
pub const BACKLOG: u64 = 64 << 20;

/// At open, a store whose files hold more than twice their live records and this much more
/// is compacted at once.
const COMPACT_AT_OPEN_SLACK: u64 = 16 << 20;
/// At open, a store of more segments than this is compacted at once.
const COMPACT_AT_OPEN_SEGMENTS: usize = 16;

/// The store: an append-only log in a directory.
#[derive(Debug)]
pub struct Store {
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held for the life of the store: one process at a time.
    _lock: File,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |error| StoreError::Io { path: path.to_owned(), error }
}

/// Reads a store's directory: its live records, what it is made of, and what was damaged.
fn read_store(dir: &Path, report: &mut LoadReport) -> Result<(Records, State), StoreError> {
    let ids = log::read_manifest(dir)?.unwrap_or_default();
    let mut latest: HashMap<Bytes, (u64, Option<Bytes>, u32)> = HashMap::new();
    let mut total_bytes = 0;
    let mut max_seq = 0;
    for &id in &ids {
        let path = dir.join(log::segment_name(id));
        let data = match std::fs::read(&path) {
            Ok(d) => Bytes::from(d),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::MissingSegment { path })
            }
            Err(error) => return Err(StoreError::Io { path, error }),
        };
        report.bytes += data.len() as u64;
        let seg = log::read_segment(data);
        if seg.damage.contains(&Damage::NotASegment) {
            return Err(StoreError::NotASegment { path });
        }
        report.segments += 1;
        total_bytes += seg.valid_len;
        let newest = ids.last() == Some(&id);
        for d in seg.damage {
            let d = match d {
                Damage::TornTail { offset, bytes } if !newest => Damage::Truncated { offset, bytes },
                d => d,
            };
            report.damage.push((path.clone(), d));
        }
        for r in seg.records {
            report.records += 1;
            max_seq = max_seq.max(r.seq);
            let value = (r.kind == Kind::Put).then_some(r.value);
            match latest.get(&r.key) {
                Some((seq, ..)) if *seq > r.seq => {}
                _ => {
                    latest.insert(r.key, (r.seq, value, r.size));
                }
            }
        }
    }
    let mut records = Records::new();
    let mut keys = HashMap::new();
    let mut live_bytes = 0;
    for (key, (seq, value, size)) in latest {
        if let Some(v) = value {
            keys.insert(Box::from(&key[..]), Live { seq, size });
            live_bytes += u64::from(size);
            records.insert(key, v);
        }
    }
    let next_segment = ids.iter().max().map_or(1, |m| m + 1);
    let state = State {
        seq: max_seq,
        pending: Vec::new(),
        keys,
        live_bytes,
        total_bytes,
        segments: ids,
        active_bytes: 0,
        next_segment,
        compacting: false,
        compact_requested: false,
        sync_requested: false,
        stop: false,
        failing: None,
    };
    Ok((records, state))
}

impl Store {
    /// Opens (or creates) the store, reads what it holds, and starts its writer.
    pub fn open(options: StoreOptions) -> Result<(Store, Records, LoadReport), StoreError> {
        let started = Instant::now();
        let dir = options.dir.clone();
        // The store holds every message it keeps: its owner's alone (as mosquitto.db, 0600).
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io_err(&dir))?;
        }
        let mut lock = lock_dir(&dir)?;
        let mut report = LoadReport::default();
        if options.reset {
            let mut aside = dir.as_os_str().to_owned();
            aside.push(".removed");
            let aside = PathBuf::from(aside);
            if aside.exists() {
                std::fs::remove_dir_all(&aside).map_err(io_err(&aside))?;
            }
            std::fs::rename(&dir, &aside).map_err(io_err(&dir))?;
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            // The old lock moved with the old directory: the new one gets its own, taken
            // before the old is let go.
            lock = lock_dir(&dir)?;
            report.reset_to = Some(aside);
        }
        let (records, mut state) = match read_store(&dir, &mut report) {
            Ok(r) => r,
            Err(
                e @ (StoreError::Manifest(_)
                | StoreError::MissingSegment { .. }
                | StoreError::NotASegment { .. }),
            ) if options.set_aside_unreadable => {
                let aside = set_aside(&dir)?;
                lock = lock_dir(&dir)?;
                report = LoadReport { set_aside: Some((aside, e.to_string())), ..LoadReport::default() };
                read_store(&dir, &mut report)?
            }
            Err(e) => return Err(e),
        };
        // Files in the directory that the manifest does not name are left from a compaction
        // or a segment start that did not finish: not part of the store.
        remove_unlisted(&dir, &state.segments);
        // A fresh active segment: what was read stays as it is until compaction rewrites it.
        let active = state.next_segment;
        state.next_segment += 1;
        start_segment(&dir, active)?;
        state.segments.push(active);
        state.active_bytes = log::SEGMENT_MAGIC.len() as u64;
        state.total_bytes += state.active_bytes;
        log::write_manifest(&dir, &state.segments).map_err(io_err(&dir))?;
        let durable = state.seq;
        // Damaged, or mostly dead records (a broker restarted more often than its
        // autosave_interval, writing less than a segment a run, never compacted: 332 MB of
        // nothing live after 8 restarts), or many segments: compacted at once.
        let wasteful = state.total_bytes > 2 * state.live_bytes + COMPACT_AT_OPEN_SLACK;
        let damaged = !report.damage.is_empty();
        let compact_now = damaged || wasteful || state.segments.len() > COMPACT_AT_OPEN_SEGMENTS;
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            policy: options.sync,
            state: Mutex::new(state),
            wake: Condvar::new(),
            durable: AtomicU64::new(durable),
            backlog: AtomicU64::new(0),
            durable_moved: tokio::sync::Notify::new(),
            compacted: Condvar::new(),
        });
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("midge-store".into())
            .spawn(move || write_loop(&writer_shared, active))
            .map_err(io_err(&dir))?;
        let store = Store { shared, writer: Mutex::new(Some(writer)), _lock: lock };
        if compact_now {
            // Rewrite what is live, so that damage is reported once, not at every start, and
            // the files stay near the size of what they hold.
            store.compact();
        }
        report.elapsed = started.elapsed();
        Ok((store, records, report))
    }

    /// Appends changes; returns the sequence number of the last, which
    /// [`Store::is_durable`] says when acknowledgements may rely on.
    pub fn append(&self, ops: impl IntoIterator<Item = Op>) -> u64 {
        let mut st = self.shared.state.lock();
        let was_empty = st.pending.is_empty();
        for op in ops {
            st.seq += 1;
            let seq = st.seq;
            let (kind, key, value) = match &op {
                Op::Put(k, v) => (Kind::Put, &k[..], &v[..]),
                Op::Delete(k) => (Kind::Delete, &k[..], &[][..]),
            };
            let mut pending = std::mem::take(&mut st.pending);
            let size = log::encode(&mut pending, seq, kind, key, value) as u64;
            st.pending = pending;
            st.active_bytes += size;
            st.total_bytes += size;
            let old = match kind {
                Kind::Put => st.keys.insert(Box::from(key), Live { seq, size: size as u32 }),
                Kind::Delete => st.keys.remove(key),
            };
            if let Some(old) = old {
                st.live_bytes -= u64::from(old.size);
            }
            if kind == Kind::Put {
                st.live_bytes += size;
            }
        }
        let seq = st.seq;
        self.shared.backlog.store(st.pending.len() as u64, Ordering::Relaxed);
        drop(st);
        if was_empty {
            self.shared.wake.notify_one();
        }
        seq
    }

    /// The last sequence number appended.
    pub fn appended(&self) -> u64 {
        self.shared.state.lock().seq
    }

    /// True while more than [`BACKLOG`] bytes wait for the writer (a disk slower than the
    /// clients, or failing): clients whose records are not durable yet are read no further,
    /// as acknowledgements hold QoS 1 and 2 publishers back, so that QoS 0 retained messages
    /// cannot grow the broker without bound either.
    pub fn backlogged(&self) -> bool {
        self.shared.backlog.load(Ordering::Relaxed) > BACKLOG
    }

    /// True once the record `seq` (and every one before it) may be relied on.
    pub fn is_durable(&self, seq: u64) -> bool {
        self.shared.durable.load(Ordering::Acquire) >= seq
    }

    /// Resolves once `seq` is durable.
    pub async fn durable(&self, seq: u64) {
        loop {
            let notified = self.shared.durable_moved.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_durable(seq) {
                return;
            }
            notified.await;
        }
    }

    /// A handle for waiting on durability from a task that outlives a borrow of the store.
    pub fn waiter(&self) -> DurableWaiter {
        DurableWaiter { shared: self.shared.clone() }
    }

    /// Writes and syncs what is pending now (SIGUSR1), without waiting for it.
    pub fn sync_now(&self) {
        self.shared.state.lock().sync_requested = true;
        self.shared.wake.notify_one();
    }

    /// Starts a compaction unless one is running.
    pub fn compact(&self) {
        self.shared.state.lock().compact_requested = true;
        self.shared.wake.notify_one();
    }

    /// Bytes of live records, and bytes in the files.
    pub fn sizes(&self) -> (u64, u64) {
        let st = self.shared.state.lock();
        (st.live_bytes, st.total_bytes)
    }

    /// Writes and syncs everything pending, then stops the writer and waits for a
    /// compaction under way (at shutdown).
    pub fn close(&self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(w) = self.writer.lock().take() {
            let _ = w.join();
        }
        let mut st = self.shared.state.lock();
        while st.compacting {
            self.shared.compacted.wait(&mut st);
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// Waits for durability without borrowing the store.
#[derive(Debug, Clone)]
pub struct DurableWaiter {
    shared: Arc<Shared>,
}

impl DurableWaiter {
    /// Resolves once `seq` is durable.
    pub async fn wait(self, seq: u64) {
        loop {
            let notified = self.shared.durable_moved.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.durable.load(Ordering::Acquire) >= seq {
                return;
            }
            notified.await;
        }
    }
}

/// Takes the store's lock (its `LOCK` file): one process at a time.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let lock_path = dir.join("LOCK");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    if lock.try_lock().is_err() {
        return Err(StoreError::Locked { path: dir.to_owned() });
    }
    Ok(lock)
}

/// Where what cannot be read is moved aside (`--set-aside-bad-store`): beside it, named
/// with the time.
pub(crate) fn aside_path(path: &Path) -> PathBuf {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".bad-{stamp}"));
    PathBuf::from(aside)
}

fn set_aside(dir: &Path) -> Result<PathBuf, StoreError> {
    let aside = aside_path(dir);
    std::fs::rename(dir, &aside).map_err(io_err(dir))?;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    // The lock file moved with the directory: the caller takes a new one.
    Ok(aside)
}

fn remove_unlisted(dir: &Path, segments: &[u64]) {
    let listed: Vec<String> = segments.iter().map(|id| log::segment_name(*id)).collect();
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("seg-") && !listed.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn start_segment(dir: &Path, id: u64) -> Result<File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(log::segment_name(id));
    let mut f = File::options()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))?;
    f.write_all(log::SEGMENT_MAGIC).map_err(io_err(&path))?;
    f.sync_all().map_err(io_err(&path))?;
    log::sync_dir(dir).map_err(io_err(dir))?;
    Ok(f)
}

/// The writer thread: takes what is pending, writes it, syncs it, says how far the log is
/// durable; starts new segments and compactions.
fn write_loop(shared: &Arc<Shared>, first: u64) {
    let open = |id: u64| {
        let path = shared.dir.join(log::segment_name(id));
        File::options().append(true).open(&path)
    };
    let Ok(mut file) = open(first) else {
        tracing::error!("Cannot open the store's segment {}: persistence stops.", log::segment_name(first));
        return;
    };
    let mut spare = Vec::new();
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    loop {
        let interval = match shared.policy {
            SyncPolicy::EveryAck => Duration::from_secs(1),
            SyncPolicy::Interval(d) => d,
        };
        let (mut buf, seq, roll, compact, stop, sync_now) = {
            let mut st = shared.state.lock();
            while st.pending.is_empty() && !st.stop && !st.compact_requested && !st.sync_requested {
                if shared.wake.wait_for(&mut st, interval).timed_out() && unsynced {
                    break;
                }
            }
            std::mem::swap(&mut st.pending, &mut spare);
            shared.backlog.store(0, Ordering::Relaxed);
            let full = st.active_bytes >= SEGMENT_MAX;
            let compact = !st.compacting
                && (std::mem::take(&mut st.compact_requested)
                    || (full && st.total_bytes > 2 * st.live_bytes + COMPACT_SLACK));
            if compact {
                st.compacting = true;
            }
            // A compaction takes every segment but the active one: the active one is closed
            // first if it holds records.
            let roll = full || (compact && st.active_bytes > log::SEGMENT_MAGIC.len() as u64);
            (
                std::mem::take(&mut spare),
                st.seq,
                roll,
                compact,
                st.stop,
                std::mem::take(&mut st.sync_requested),
            )
        };
        if !buf.is_empty() {
            // A failing disk (full, read-only) is retried: nothing becomes durable meanwhile,
            // so acknowledgements wait and publishers are held, instead of being lied to.
            let mut backoff = Duration::from_millis(50);
            // Where this write starts: a write that fails part way (a full disk) is cut back
            // to here before it is tried again, so that no record is written twice or torn.
            let start = file.metadata().map(|m| m.len());
            while let Err(e) = file.write_all(&buf) {
                if let Ok(start) = start {
                    // Appending, the next write goes to the (new) end.
                    let _ = file.set_len(start);
                }
                let mut st = shared.state.lock();
                if st.stop {
                    // Stopping (SIGTERM) on a disk that takes nothing: what waits was never
                    // acknowledged, so nothing acknowledged is lost by leaving it.
                    tracing::error!(
                        "Cannot write to the store ({e}): stopping without the last {} bytes of records, \
                         none of them acknowledged.",
                        buf.len()
                    );
                    return;
                }
                if st.failing.is_none() {
                    tracing::error!("Cannot write to the store ({e}): acknowledgements wait until it can.");
                    st.failing = Some(e.to_string());
                }
                drop(st);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            unsynced = true;
        }
        let must_sync = match shared.policy {
            SyncPolicy::EveryAck => unsynced,
            SyncPolicy::Interval(d) => unsynced && (sync_now || stop || roll || last_sync.elapsed() >= d),
        };
        if must_sync {
            while let Err(e) = file.sync_data() {
                tracing::error!("Cannot sync the store ({e}): acknowledgements wait until it can.");
                std::thread::sleep(Duration::from_millis(500));
            }
            unsynced = false;
            last_sync = Instant::now();
        }
        if !buf.is_empty() {
            let mut st = shared.state.lock();
            if st.failing.take().is_some() {
                tracing::info!("Writing to the store works again.");
            }
        }
        // Interval mode: written is enough for acknowledgements (a killed process loses
        // nothing the operating system has); every-ack mode: synced.
        if (!buf.is_empty() || must_sync) && (shared.policy != SyncPolicy::EveryAck || !unsynced) {
            shared.durable.store(seq, Ordering::Release);
            shared.durable_moved.notify_waiters();
        }
        buf.clear();
        spare = buf;
        if roll {
            match roll_segment(shared) {
                Ok(f) => file = f,
                Err(e) => tracing::error!("Cannot start a new store segment: {e}."),
            }
        }
        if compact {
            let s = shared.clone();
            let spawned = std::thread::Builder::new().name("midge-compact".into()).spawn(move || {
                if let Err(e) = super::compact::compact(&s.dir, &s.state, &s.durable) {
                    tracing::error!("Store compaction failed: {e}.");
                }
                s.state.lock().compacting = false;
                s.compacted.notify_all();
            });
            if spawned.is_err() {
                shared.state.lock().compacting = false;
            }
        }
        if stop {
            let st = shared.state.lock();
            if st.pending.is_empty() {
                return;
            }
        }
    }
}

/// Closes the active segment and starts the next one.
fn roll_segment(shared: &Shared) -> Result<File, StoreError> {
    let mut st = shared.state.lock();
    let id = st.next_segment;
    st.next_segment += 1;
    start_segment(&shared.dir, id)?;
    // In the list once the manifest names it: a roll that fails keeps the active segment
    // last, so that a compaction never takes (and removes) the file still written to.
    let mut segments = st.segments.clone();
    segments.push(id);
    log::write_manifest(&shared.dir, &segments).map_err(io_err(&shared.dir))?;
    st.segments = segments;
    st.active_bytes = log::SEGMENT_MAGIC.len() as u64;
    st.total_bytes += st.active_bytes;
    drop(st);
    let path = shared.dir.join(log::segment_name(id));
    File::options().append(true).open(&path).map_err(io_err(&path))
}

impl State {
    /// The segments to compact: all but the active one.
    pub(super) fn sealed(&self) -> Vec<u64> {
        self.segments[..self.segments.len().saturating_sub(1)].to_vec()
    }

    /// True when a compaction keeps `key`'s record `seq`: it is the live one, or an older
    /// one while the live one is not durable yet (appended, not written: a crash before it is
    /// leaves this one the key's latest on disk, acknowledged; reading keeps the highest).
    pub(super) fn keeps(&self, key: &[u8], seq: u64, durable: u64) -> bool {
        self.keys.get(key).is_some_and(|l| l.seq == seq || (seq < l.seq && l.seq > durable))
    }

    /// A new segment id.
    pub(super) fn next_id(&mut self) -> u64 {
        let id = self.next_segment;
        self.next_segment += 1;
        id
    }

    /// Replaces the compacted segments `old` with `new` (already written and synced) in the
    /// manifest, then removes them.
    pub(super) fn replace(
        &mut self,
        dir: &Path,
        old: &[u64],
        new: u64,
        new_bytes: u64,
    ) -> Result<(), StoreError> {
        let mut segments = vec![new];
        segments.extend(self.segments.iter().filter(|id| !old.contains(id)));
        log::write_manifest(dir, &segments).map_err(io_err(dir))?;
        let mut freed = 0;
        for id in old {
            let path = dir.join(log::segment_name(*id));
            freed += std::fs::metadata(&path).map_or(0, |m| m.len());
            let _ = std::fs::remove_file(path);
        }
        self.segments = segments;
        self.total_bytes = (self.total_bytes + new_bytes).saturating_sub(freed);
        Ok(())
    }
}

/// The engine's state, shared with compaction.
pub(super) type SharedState = Mutex<State>;

pub(super) fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    io_err(path)
}
