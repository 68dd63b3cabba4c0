//! Raw API tests on a real RocksDB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use shale_proto::kvrpcpb::{self, ApiVersion};

use crate::engine::{CfName, Engine, EngineContext, LocalKv, Modify};
use crate::storage::test_util::*;
use crate::storage::{StorageError, MAX_KEY_SIZE};

fn c(api: ApiVersion) -> Option<kvrpcpb::Context> {
    Some(kvrpcpb::Context {
        api_version: api as i32,
        ..ctx().unwrap()
    })
}

impl TestStore {
    async fn raw_put(&self, key: &[u8], value: &[u8], ttl: u64) {
        self.storage
            .raw_put(kvrpcpb::RawPutRequest {
                context: ctx(),
                key: key.to_vec(),
                value: value.to_vec(),
                ttl,
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn raw_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let r = self
            .storage
            .raw_get(kvrpcpb::RawGetRequest {
                context: ctx(),
                key: key.to_vec(),
                cf: String::new(),
            })
            .await
            .unwrap();
        (!r.not_found).then_some(r.value)
    }

    async fn raw_scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        reverse: bool,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let r = self
            .storage
            .raw_scan(kvrpcpb::RawScanRequest {
                context: ctx(),
                start_key: start.to_vec(),
                end_key: end.to_vec(),
                limit,
                reverse,
                ..Default::default()
            })
            .await
            .unwrap();
        r.kvs.into_iter().map(|p| (p.key, p.value)).collect()
    }
}

fn kv(k: &[u8], v: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (k.to_vec(), v.to_vec())
}

#[tokio::test]
async fn put_get_delete_and_batches() {
    let s = new_store();
    s.raw_put(b"k1", b"v1", 0).await;
    assert_eq!(s.raw_get(b"k1").await, Some(b"v1".to_vec()));
    assert_eq!(s.raw_get(b"nope").await, None);
    s.raw_put(b"k1", b"", 0).await;
    assert_eq!(s.raw_get(b"k1").await, Some(vec![]), "empty values exist");
    s.storage
        .raw_delete(kvrpcpb::RawDeleteRequest {
            context: ctx(),
            key: b"k1".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(s.raw_get(b"k1").await, None);

    let pairs = vec![
        kvrpcpb::KvPair {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            error: None,
        },
        kvrpcpb::KvPair {
            key: b"b".to_vec(),
            value: b"2".to_vec(),
            error: None,
        },
        kvrpcpb::KvPair {
            key: b"c".to_vec(),
            value: b"3".to_vec(),
            error: None,
        },
    ];
    s.storage
        .raw_batch_put(kvrpcpb::RawBatchPutRequest {
            context: ctx(),
            pairs,
            ..Default::default()
        })
        .await
        .unwrap();
    let r = s
        .storage
        .raw_batch_get(kvrpcpb::RawBatchGetRequest {
            context: ctx(),
            keys: vec![b"a".to_vec(), b"x".to_vec(), b"c".to_vec()],
            cf: "default".into(),
        })
        .await
        .unwrap();
    let got: Vec<_> = r.pairs.into_iter().map(|p| (p.key, p.value)).collect();
    assert_eq!(got, vec![kv(b"a", b"1"), kv(b"c", b"3")]);
    s.storage
        .raw_batch_delete(kvrpcpb::RawBatchDeleteRequest {
            context: ctx(),
            keys: vec![b"a".to_vec(), b"b".to_vec()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(s.raw_scan(b"", b"", 10, false).await, vec![kv(b"c", b"3")]);
}

#[tokio::test]
async fn ttl_expiry_hides_values_everywhere() {
    let s = new_store();
    s.raw_put(b"short", b"v", 10).await;
    s.raw_put(b"long", b"v", 100).await;
    s.raw_put(b"forever", b"v", 0).await;
    let ttl = |key: &'static [u8]| {
        let storage = s.storage.clone();
        async move {
            let r = storage
                .raw_get_key_ttl(kvrpcpb::RawGetKeyTtlRequest {
                    context: ctx(),
                    key: key.to_vec(),
                    cf: String::new(),
                })
                .await
                .unwrap();
            (!r.not_found).then_some(r.ttl)
        }
    };
    assert_eq!(ttl(b"short").await, Some(10));
    assert_eq!(ttl(b"forever").await, Some(0));
    assert_eq!(ttl(b"missing").await, None);
    s.storage.advance_clock(11);
    assert_eq!(s.raw_get(b"short").await, None);
    assert_eq!(ttl(b"short").await, None);
    assert_eq!(ttl(b"long").await, Some(89));
    let keys: Vec<Vec<u8>> = s
        .raw_scan(b"", b"", 10, false)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, vec![b"forever".to_vec(), b"long".to_vec()]);
    // Limits count live pairs only.
    assert_eq!(s.raw_scan(b"", b"", 1, true).await, vec![kv(b"long", b"v")]);
    // CAS treats an expired value as absent.
    let r = s
        .storage
        .raw_compare_and_swap(kvrpcpb::RawCasRequest {
            context: ctx(),
            key: b"short".to_vec(),
            value: b"again".to_vec(),
            previous_not_exist: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r.succeed && r.previous_not_exist);
    // Batch put TTLs: one per pair, one for all, or none.
    let pairs = |keys: &[&[u8]]| -> Vec<kvrpcpb::KvPair> {
        keys.iter()
            .map(|k| kvrpcpb::KvPair {
                key: k.to_vec(),
                value: b"v".to_vec(),
                error: None,
            })
            .collect()
    };
    let put = |pairs, ttls| kvrpcpb::RawBatchPutRequest {
        context: ctx(),
        pairs,
        ttls,
        ..Default::default()
    };
    s.storage
        .raw_batch_put(put(pairs(&[b"t1", b"t2"]), vec![5, 50]))
        .await
        .unwrap();
    s.storage
        .raw_batch_put(put(pairs(&[b"t3", b"t4"]), vec![7]))
        .await
        .unwrap();
    assert_eq!((ttl(b"t1").await, ttl(b"t2").await), (Some(5), Some(50)));
    assert_eq!((ttl(b"t3").await, ttl(b"t4").await), (Some(7), Some(7)));
    let r = s
        .storage
        .raw_batch_put(put(pairs(&[b"t5", b"t6", b"t7"]), vec![1, 2]))
        .await;
    assert!(matches!(r, Err(StorageError::InvalidArgument(_))));
    assert_eq!(s.raw_get(b"t5").await, None);
}

#[tokio::test]
async fn scans_forward_reverse_and_batched() {
    let s = new_store();
    for k in [b"a", b"b", b"c", b"d", b"e"] {
        s.raw_put(k, k, 0).await;
    }
    let keys =
        |v: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<u8> { v.into_iter().map(|(k, _)| k[0]).collect() };
    assert_eq!(keys(s.raw_scan(b"b", b"d", 10, false).await), b"bc");
    assert_eq!(keys(s.raw_scan(b"b", b"", 2, false).await), b"bc");
    assert_eq!(keys(s.raw_scan(b"", b"", 0, false).await), b"");
    // Reverse: start_key is the exclusive upper bound, end_key the inclusive lower.
    assert_eq!(keys(s.raw_scan(b"d", b"b", 10, true).await), b"cb");
    assert_eq!(keys(s.raw_scan(b"", b"", 3, true).await), b"edc");
    let r = s
        .storage
        .raw_scan(kvrpcpb::RawScanRequest {
            context: ctx(),
            limit: 10,
            key_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r.kvs.iter().all(|p| p.value.is_empty()) && r.kvs.len() == 5);
    let r = s
        .storage
        .raw_batch_scan(kvrpcpb::RawBatchScanRequest {
            context: ctx(),
            ranges: vec![
                kvrpcpb::KeyRange {
                    start_key: b"a".to_vec(),
                    end_key: b"c".to_vec(),
                },
                kvrpcpb::KeyRange {
                    start_key: b"c".to_vec(),
                    end_key: b"".to_vec(),
                },
            ],
            each_limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.kvs.iter().map(|p| p.key[0]).collect::<Vec<_>>(), b"abcd");
    s.storage
        .raw_delete_range(kvrpcpb::RawDeleteRangeRequest {
            context: ctx(),
            start_key: b"b".to_vec(),
            end_key: b"d".to_vec(),
            cf: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(keys(s.raw_scan(b"", b"", 10, false).await), b"ade");
    let r = s
        .storage
        .raw_delete_range(kvrpcpb::RawDeleteRangeRequest {
            context: ctx(),
            start_key: b"d".to_vec(),
            end_key: b"b".to_vec(),
            cf: String::new(),
        })
        .await;
    assert!(matches!(r, Err(StorageError::InvalidArgument(_))));
}

#[tokio::test]
async fn compare_and_swap() {
    let s = new_store();
    let cas = |prev: Option<&[u8]>, value: &[u8]| kvrpcpb::RawCasRequest {
        context: ctx(),
        key: b"k".to_vec(),
        value: value.to_vec(),
        previous_not_exist: prev.is_none(),
        previous_value: prev.unwrap_or_default().to_vec(),
        ..Default::default()
    };
    let r = s
        .storage
        .raw_compare_and_swap(cas(None, b"1"))
        .await
        .unwrap();
    assert!(r.succeed && r.previous_not_exist);
    let r = s
        .storage
        .raw_compare_and_swap(cas(None, b"2"))
        .await
        .unwrap();
    assert!(!r.succeed && !r.previous_not_exist);
    assert_eq!(r.previous_value, b"1");
    let r = s
        .storage
        .raw_compare_and_swap(cas(Some(b"0"), b"2"))
        .await
        .unwrap();
    assert!(!r.succeed);
    let r = s
        .storage
        .raw_compare_and_swap(cas(Some(b"1"), b"2"))
        .await
        .unwrap();
    assert!(r.succeed);
    assert_eq!(r.previous_value, b"1");
    assert_eq!(s.raw_get(b"k").await, Some(b"2".to_vec()));
}

#[tokio::test]
async fn concurrent_cas_increments_are_atomic() {
    let s = new_store();
    s.raw_put(b"n", b"0", 0).await;
    let mut tasks = vec![];
    for _ in 0..8 {
        let storage = s.storage.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < 10 {
                let cur = storage
                    .raw_get(kvrpcpb::RawGetRequest {
                        context: ctx(),
                        key: b"n".to_vec(),
                        cf: String::new(),
                    })
                    .await
                    .unwrap()
                    .value;
                let n: u64 = String::from_utf8(cur.clone()).unwrap().parse().unwrap();
                let r = storage
                    .raw_compare_and_swap(kvrpcpb::RawCasRequest {
                        context: ctx(),
                        key: b"n".to_vec(),
                        value: (n + 1).to_string().into_bytes(),
                        previous_value: cur,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                if r.succeed {
                    done += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.raw_get(b"n").await, Some(b"80".to_vec()));
}

#[tokio::test]
async fn api_v2_keys_need_the_raw_prefix_and_stay_in_their_keyspace() {
    let s = new_store();
    let v2 = c(ApiVersion::V2);
    let put = |key: &[u8]| kvrpcpb::RawPutRequest {
        context: v2.clone(),
        key: key.to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    assert!(matches!(
        s.storage.raw_put(put(b"x\0\0\0k")).await,
        Err(StorageError::InvalidArgument(_))
    ));
    assert!(matches!(
        s.storage.raw_put(put(b"r\0")).await,
        Err(StorageError::InvalidArgument(_))
    ));
    s.storage.raw_put(put(b"r\0\0\0k1")).await.unwrap();
    s.storage.raw_put(put(b"r\0\0\0k2")).await.unwrap();
    // A transaction in the same store under V2 does not show up in raw scans.
    let mut txn = prewrite_req(vec![put_m(b"x\0\0\0t", &[1u8; 300])], b"x\0\0\0t", 10);
    txn.context = v2.clone();
    assert!(s.storage.kv_prewrite(txn).await.unwrap().errors.is_empty());
    let mut commit = kvrpcpb::CommitRequest {
        context: v2.clone(),
        start_version: 10,
        keys: vec![b"x\0\0\0t".to_vec()],
        commit_version: 20,
        ..Default::default()
    };
    commit.keys.dedup();
    assert!(s.storage.kv_commit(commit).await.unwrap().error.is_none());
    let r = s
        .storage
        .raw_scan(kvrpcpb::RawScanRequest {
            context: v2.clone(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let keys: Vec<Vec<u8>> = r.kvs.into_iter().map(|p| p.key).collect();
    assert_eq!(keys, vec![b"r\0\0\0k1".to_vec(), b"r\0\0\0k2".to_vec()]);
    let r = s
        .storage
        .raw_get(kvrpcpb::RawGetRequest {
            context: v2.clone(),
            key: b"r\0\0\0k2".to_vec(),
            cf: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(r.value, b"v");
    // An open-ended delete range stays in raw mode.
    s.storage
        .raw_delete_range(kvrpcpb::RawDeleteRangeRequest {
            context: v2.clone(),
            start_key: b"r\0\0\0".to_vec(),
            end_key: vec![],
            cf: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        s.count(CfName::Default),
        1,
        "the transactional value survives"
    );
}

fn put_m(key: &[u8], value: &[u8]) -> kvrpcpb::Mutation {
    put(key, value)
}

#[tokio::test]
async fn bad_raw_input_is_rejected() {
    let s = new_store();
    let big = vec![b'k'; MAX_KEY_SIZE + 1];
    let r = s
        .storage
        .raw_put(kvrpcpb::RawPutRequest {
            context: ctx(),
            key: big,
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await;
    assert!(matches!(r, Err(StorageError::InvalidArgument(_))));
    let r = s
        .storage
        .raw_put(kvrpcpb::RawPutRequest {
            context: ctx(),
            ..Default::default()
        })
        .await;
    assert!(
        matches!(r, Err(StorageError::InvalidArgument(_))),
        "empty key"
    );
    let r = s
        .storage
        .raw_get(kvrpcpb::RawGetRequest {
            context: ctx(),
            key: b"k".to_vec(),
            cf: "lock".into(),
        })
        .await;
    assert!(
        matches!(r, Err(StorageError::InvalidArgument(_))),
        "unknown cf"
    );
    let small = new_store_with(crate::storage::StorageConfig {
        max_value_size: 3,
        ..Default::default()
    });
    let r = small
        .storage
        .raw_put(kvrpcpb::RawPutRequest {
            context: ctx(),
            key: b"k".to_vec(),
            value: b"1234".to_vec(),
            ..Default::default()
        })
        .await;
    assert!(matches!(r, Err(StorageError::InvalidArgument(_))));
    // A corrupt stored value is an error, not a panic or garbage.
    LocalKv::new(s.rocks.clone())
        .async_write(
            &EngineContext::default(),
            vec![Modify::Put(CfName::Default, b"bad".to_vec(), vec![42])],
        )
        .await
        .unwrap();
    let r = s
        .storage
        .raw_get(kvrpcpb::RawGetRequest {
            context: ctx(),
            key: b"bad".to_vec(),
            cf: String::new(),
        })
        .await;
    assert!(matches!(r, Err(StorageError::Corrupted(_))));
}

#[tokio::test]
async fn v1_raw_scans_step_over_long_transactional_values() {
    let s = new_store();
    s.raw_put(b"raw", b"v", 0).await;
    s.must_put(b"txn", &[5u8; 1000], 10, 20).await;
    assert_eq!(s.count(CfName::Default), 2);
    assert_eq!(
        s.raw_scan(b"", b"", 10, false).await,
        vec![kv(b"raw", b"v")]
    );
    assert_eq!(s.raw_scan(b"", b"", 10, true).await, vec![kv(b"raw", b"v")]);
}
