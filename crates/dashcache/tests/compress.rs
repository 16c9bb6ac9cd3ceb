//! `Compressed<C>` on every backend: round trips mixed with values written before compression
//! was on, bombs and corrupt frames refused, the limit on the uncompressed size, and sealing
//! underneath. (The conformance suite also runs on a compressed memory cache.)

#![allow(clippy::unwrap_used, clippy::panic)] // a panic is how a test fails

use std::sync::Arc;

use bytes::Bytes;
use dashcache::compress::{Compressed, Compression};
use dashcache::sealed::{Keyring, Sealed};
use dashcache::{Cache, Condition, ErrorKind, Ttl, Write};
use dashcache_testkit::on_every_backend;

/// A page of transactions, as the service caches it.
fn page(n: usize) -> Bytes {
    let rows: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("t{i:08}"),
                "account_id": "a_4f2c9e",
                "amount_cents": (i * 7919) % 100_000,
                "currency": "USD",
                "description": format!("CARD PURCHASE {} MARKET #{}", ["GROCERY", "FUEL", "COFFEE"][i % 3], i % 97),
                "posted_at": 1_764_000_000 + i * 3600,
            })
        })
        .collect();
    Bytes::from(serde_json::to_vec(&rows).unwrap())
}

async fn round_trips_mixed_with_plain_values(raw: Arc<dyn Cache>) {
    let cache = Compressed::new(Arc::clone(&raw), Compression::default());
    // Written before compression was turned on.
    raw.set("{z}:old", page(50), Ttl::secs(60)).await.unwrap();
    raw.set("{z}:tiny", Bytes::from_static(b"7"), Ttl::secs(60))
        .await
        .unwrap();
    cache
        .set("{z}:new", page(100), Ttl::secs(60))
        .await
        .unwrap();
    cache
        .set_many(
            &[("{z}:m1", page(30)), ("{z}:m2", Bytes::from_static(b"{}"))],
            Ttl::secs(60),
        )
        .await
        .unwrap();
    assert_eq!(cache.get("{z}:old").await.unwrap(), Some(page(50)));
    assert_eq!(cache.get("{z}:new").await.unwrap(), Some(page(100)));
    assert_eq!(
        cache
            .get_many(&[
                "{z}:old", "{z}:tiny", "{z}:new", "{z}:none", "{z}:m1", "{z}:m2"
            ])
            .await
            .unwrap(),
        vec![
            Some(page(50)),
            Some(Bytes::from_static(b"7")),
            Some(page(100)),
            None,
            Some(page(30)),
            Some(Bytes::from_static(b"{}")),
        ]
    );
    let stored = raw.get("{z}:new").await.unwrap().unwrap();
    assert!(stored.starts_with(b"\0dcz"));
    assert!(
        stored.len() * 4 < page(100).len(),
        "{} bytes stored for {}",
        stored.len(),
        page(100).len()
    );
    // Small values are stored as they are.
    assert_eq!(
        raw.get("{z}:m2").await.unwrap(),
        Some(Bytes::from_static(b"{}"))
    );
    assert!(
        cache
            .write_if(
                &[Condition::Absent("{z}:w")],
                &[
                    Write::Set("{z}:w", page(40), Ttl::secs(60)),
                    Write::Replace("{z}:old", page(60))
                ]
            )
            .await
            .unwrap()
    );
    assert_eq!(cache.take("{z}:w").await.unwrap(), Some(page(40)));
    assert_eq!(cache.get("{z}:old").await.unwrap(), Some(page(60)));
    assert!(
        raw.get("{z}:old")
            .await
            .unwrap()
            .unwrap()
            .starts_with(b"\0dcz")
    );
    // Writing plain again (turning compression off) keeps every value readable.
    let plain = Compressed::passthrough(Arc::clone(&raw), Compression::default());
    assert_eq!(plain.get("{z}:new").await.unwrap(), Some(page(100)));
    plain
        .set("{z}:new", page(100), Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(raw.get("{z}:new").await.unwrap(), Some(page(100)));
}

async fn bombs_and_corrupt_frames_are_typed_errors_and_delete_nothing(raw: Arc<dyn Cache>) {
    // Another writer with a far larger limit stored 64 MiB of zeros: 2 KiB on the wire.
    let lax = Compression::default().with_max_value_bytes(usize::MAX);
    let bomb = lax.encode("{b}:bomb", &vec![0u8; 64 << 20]).unwrap();
    assert!(bomb.len() < 8 << 10, "{}", bomb.len());
    raw.set("{b}:bomb", bomb, Ttl::secs(60)).await.unwrap();
    raw.set(
        "{b}:corrupt",
        Bytes::from_static(b"\0dcz\x28\xb5\x2f\xfdnot really zstd"),
        Ttl::secs(60),
    )
    .await
    .unwrap();
    let cache = Compressed::new(Arc::clone(&raw), Compression::default());
    let err = cache.get("{b}:bomb").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");
    assert!(err.to_string().contains("inflates"), "{err}");
    assert_eq!(
        cache.get("{b}:corrupt").await.unwrap_err().kind(),
        ErrorKind::Deserialize
    );
    assert_eq!(
        cache.get_many(&["{b}:bomb"]).await.unwrap_err().kind(),
        ErrorKind::TooLarge
    );
    // Refused, not lost: both are still there for whoever can read them.
    assert!(raw.exists("{b}:bomb").await.unwrap());
    assert!(raw.exists("{b}:corrupt").await.unwrap());
    // The limit is on the uncompressed size, even for a value that compresses to nothing.
    let small = Compressed::new(
        Arc::clone(&raw),
        Compression::default().with_max_value_bytes(1 << 20),
    );
    let err = small
        .set("{b}:big", Bytes::from(vec![b'a'; 2 << 20]), Ttl::secs(60))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert!(!raw.exists("{b}:big").await.unwrap());
}

async fn compressed_then_sealed(raw: Arc<dyn Cache>) {
    let cache = Compressed::new(
        Sealed::new(Arc::clone(&raw), Keyring::new(1, &[4; 32])),
        Compression::default(),
    );
    cache
        .set("{s}:page", page(100), Ttl::secs(60))
        .await
        .unwrap();
    assert_eq!(cache.get("{s}:page").await.unwrap(), Some(page(100)));
    let underneath = raw.get("{s}:page").await.unwrap().unwrap();
    assert_eq!(underneath[0], 1, "sealed (version 1)");
    assert!(
        underneath.len() * 4 < page(100).len(),
        "compressed before sealing: {} bytes",
        underneath.len()
    );
    assert!(!underneath.windows(7).any(|w| w == b"GROCERY"));
}

on_every_backend!(
    round_trips_mixed_with_plain_values,
    bombs_and_corrupt_frames_are_typed_errors_and_delete_nothing,
    compressed_then_sealed,
);
