//! Compaction: the live records of the closed segments are copied into one new segment,
//! which then replaces them in the manifest. Appends go on meanwhile into the active
//! segment; the engine's lock is taken only briefly, a batch of records at a time.
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::engine::{io, SharedState, StoreError};
use super::log::{self, Kind};

/// Records checked for liveness per hold of the engine's lock.
const BATCH: usize = 1024;

/// Compacts every closed segment of the store in `dir`.
pub(super) fn compact(dir: &Path, state: &SharedState, durable: &AtomicU64) -> Result<(), StoreError> {
    let (sealed, new_id) = {
        let mut st = state.lock();
        let sealed = st.sealed();
        if sealed.is_empty() {
            return Ok(());
        }
        (sealed, st.next_id())
    };
    let started = std::time::Instant::now();
    let path = dir.join(log::segment_name(new_id));
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::File::options()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?
    };
    let done = copy_live(dir, state, durable, &sealed, &mut file, &path).and_then(|(written, kept)| {
        state.lock().replace(dir, &sealed, new_id, written).map(|()| (written, kept))
    });
    drop(file);
    let (written, kept) = match done {
        Ok(done) => done,
        Err(e) => {
            // A compaction that failed (a full disk) leaves no file of its own to take the
            // room: the manifest does not name it.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    tracing::info!(
        "Store compacted: {} segments into one, {kept} live records, {written} bytes, in {:.2} s.",
        sealed.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Copies the records a compaction keeps from the `sealed` segments into `file`, synced;
/// returns the bytes written and the records kept.
fn copy_live(
    dir: &Path,
    state: &SharedState,
    durable: &AtomicU64,
    sealed: &[u64],
    file: &mut std::fs::File,
    path: &Path,
) -> Result<(u64, u64), StoreError> {
    let mut out = log::SEGMENT_MAGIC.to_vec();
    let mut written = 0u64;
    let mut kept = 0u64;
    for id in sealed {
        let seg_path = dir.join(log::segment_name(*id));
        let data = Bytes::from(std::fs::read(&seg_path).map_err(io(&seg_path))?);
        let seg = log::read_segment(data);
        for chunk in seg.records.chunks(BATCH) {
            let st = state.lock();
            let durable = durable.load(Ordering::Acquire);
            for r in chunk {
                if r.kind == Kind::Put && st.keeps(&r.key, r.seq, durable) {
                    log::encode(&mut out, r.seq, r.kind, &r.key, &r.value);
                    kept += 1;
                }
            }
            drop(st);
            if out.len() >= 1 << 20 {
                file.write_all(&out).map_err(io(path))?;
                written += out.len() as u64;
                out.clear();
            }
        }
    }
    file.write_all(&out).map_err(io(path))?;
    written += out.len() as u64;
    file.sync_all().map_err(io(path))?;
    log::sync_dir(dir).map_err(io(dir))?;
    Ok((written, kept))
}
