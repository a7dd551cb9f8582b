use std::time::Duration;

use bytes::Bytes;

use super::*;

fn options(dir: &std::path::Path) -> StoreOptions {
    StoreOptions {
        dir: dir.join("store"),
        sync: SyncPolicy::EveryAck,
        set_aside_unreadable: false,
        reset: false,
    }
}

fn put(k: &str, v: &str) -> Op {
    Op::Put(k.as_bytes().to_vec(), v.as_bytes().to_vec())
}

fn wait(store: &Store, seq: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !store.is_durable(seq) {
        assert!(std::time::Instant::now() < deadline, "seq {seq} never became durable");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn live(records: &Records) -> Vec<(String, String)> {
    records
        .iter()
        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

#[test]
fn what_was_durable_is_read_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (store, records, _) = Store::open(options(dir.path())).unwrap();
    assert!(records.is_empty());
    store.append([put("a", "1"), put("b", "2")]);
    let seq = store.append([put("a", "3"), Op::Delete(b"b".to_vec()), put("c", "4")]);
    wait(&store, seq);
    drop(store);
    let (store, records, report) = Store::open(options(dir.path())).unwrap();
    assert_eq!(live(&records), vec![("a".into(), "3".into()), ("c".into(), "4".into())]);
    assert!(report.damage.is_empty());
    // Sequence numbers go on from where they were.
    assert!(store.append([put("d", "5")]) > seq);
}

#[test]
fn a_second_process_cannot_open_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, _, _) = Store::open(options(dir.path())).unwrap();
    assert!(matches!(Store::open(options(dir.path())), Err(StoreError::Locked { .. })));
}

#[test]
fn compaction_keeps_exactly_the_live_records_while_appends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = Store::open(options(dir.path())).unwrap();
    for round in 0..50 {
        let ops: Vec<Op> = (0..100)
            .map(|i| {
                if (i + round) % 3 == 0 {
                    Op::Delete(format!("k{i}").into_bytes())
                } else {
                    put(&format!("k{i}"), &format!("v{round}"))
                }
            })
            .collect();
        store.append(ops);
    }
    let (live_before, total_before) = store.sizes();
    store.compact();
    // Appends during and after compaction.
    let mut last = 0;
    for i in 0..100 {
        last = store.append([put(&format!("new{i}"), "x")]);
    }
    wait(&store, last);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.sizes().1 >= total_before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(store.sizes().1 < total_before, "the files shrank: {:?} -> {:?}", total_before, store.sizes());
    assert!(live_before > 0);
    drop(store);
    let (_, records, report) = Store::open(options(dir.path())).unwrap();
    assert!(report.damage.is_empty());
    let expected: usize = (0..100).filter(|i| (i + 49) % 3 != 0).count() + 100;
    assert_eq!(records.len(), expected);
    assert_eq!(records.get(&Bytes::from("k1")).map(|v| &v[..]), Some(&b"v49"[..]));
    assert!(!records.contains_key(&Bytes::from("k2")), "(2 + 49) % 3 == 0: deleted last");
}

#[test]
fn a_torn_write_is_reported_and_what_came_before_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = Store::open(options(dir.path())).unwrap();
    let seq = store.append([put("a", "1"), put("b", "2")]);
    wait(&store, seq);
    drop(store);
    // Cut the last record short, as a crash in the middle of a write would.
    let seg = std::fs::read_dir(dir.path().join("store"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log") && std::fs::metadata(p).unwrap().len() > 8)
        .max()
        .unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 3).unwrap();
    let (store, records, report) = Store::open(options(dir.path())).unwrap();
    assert_eq!(live(&records), vec![("a".into(), "1".into())]);
    assert!(matches!(report.damage[..], [(_, Damage::TornTail { .. })]), "{:?}", report.damage);
    drop(store);
    // Reported once: the open compacted what was valid.
    let (_, records, report) = Store::open(options(dir.path())).unwrap();
    assert_eq!(records.len(), 1);
    assert!(report.damage.is_empty(), "{:?}", report.damage);
}

#[test]
fn a_missing_segment_refuses_to_open_unless_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = Store::open(options(dir.path())).unwrap();
    wait(&store, store.append([put("a", "1")]));
    drop(store);
    let store_dir = dir.path().join("store");
    for e in std::fs::read_dir(&store_dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("seg-") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    assert!(matches!(Store::open(options(dir.path())), Err(StoreError::MissingSegment { .. })));
    let (_, records, report) =
        Store::open(StoreOptions { set_aside_unreadable: true, ..options(dir.path()) }).unwrap();
    assert!(records.is_empty());
    let (aside, why) = report.set_aside.expect("moved aside");
    assert!(aside.exists(), "the bad store is kept for inspection");
    assert!(why.contains("missing"), "{why}");
}

#[test]
fn interval_sync_makes_appends_durable_once_written() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = Store::open(StoreOptions {
        sync: SyncPolicy::Interval(Duration::from_secs(3600)),
        ..options(dir.path())
    })
    .unwrap();
    let seq = store.append([put("a", "1")]);
    wait(&store, seq);
}

#[test]
fn a_store_restarted_often_does_not_pile_up_segments() {
    // Each start begins a segment; one restarted more often than its autosave_interval was
    // never compacted (300 restarts, 301 files).
    let dir = tempfile::tempdir().unwrap();
    for i in 0..40 {
        let (store, records, _) = Store::open(options(dir.path())).unwrap();
        assert_eq!(
            records.get(&Bytes::from("k")).map(|v| v.to_vec()),
            (i > 0).then(|| format!("v{}", i - 1).into_bytes())
        );
        wait(&store, store.append([put("k", &format!("v{i}"))]));
    }
    let segments = std::fs::read_dir(dir.path().join("store"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .count();
    assert!(segments <= 18, "{segments} segment files after 40 starts");
}
