//! Sticky percentage cohorts.
//!
//! The bucket of an id is defined so anyone can recompute it, in any language:
//!
//! ```text
//! digest = SHA-256(seed ++ ":" ++ id)          (bytes; seed and id as sent, no normalisation)
//! bucket = big-endian u64 of digest[0..8] mod 10000
//! in the cohort  <=>  bucket < percent * 100
//! ```
//!
//! e.g. `printf '%s' 'checkout-v2:alice' | sha256sum` starts `0dd2d99081f8004f`, and
//! 0x0dd2d99081f8004f mod 10000 = 2815: alice is in any `checkout-v2` cohort above 28.15%.
//!
//! SHA-256 and big-endian byte order give the same answer on every worker, restart, CPU
//! architecture and release. Comparing against a threshold makes cohorts monotone: raising the
//! percent only adds users. The seed lets two experiments draw independent cohorts.

use sha2::{Digest, Sha256};

/// Buckets in the ring: percent has two decimals, so 100.00% is 10000 buckets.
pub const BUCKETS: u32 = 10_000;

/// The bucket (0..BUCKETS) of `id` under `seed`.
pub fn bucket_of(seed: &[u8], id: &[u8]) -> u32 {
    let digest = Sha256::new()
        .chain_update(seed)
        .chain_update(b":")
        .chain_update(id)
        .finalize();
    let mut head = [0u8; 8];
    for (dst, src) in head.iter_mut().zip(digest.iter()) {
        *dst = *src;
    }
    // A constant divisor, so the lints see that `%` cannot fail.
    const DIVISOR: u64 = BUCKETS as u64;
    // The remainder is below 10000, so it fits in u32.
    (u64::from_be_bytes(head) % DIVISOR) as u32
}

/// Whether `id` falls in a cohort of `basis_points` (hundredths of a percent).
pub fn in_cohort(seed: &[u8], id: &[u8], basis_points: u32) -> bool {
    bucket_of(seed, id) < basis_points
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    /// Pinned vectors, computed independently with Python's hashlib:
    /// `int.from_bytes(sha256((seed + ":" + id).encode()).digest()[:8], "big") % 10000`.
    /// They run natively and in wasm: a change here breaks every user's cohort.
    const VECTORS: [(&str, &str, u32); 6] = [
        ("", "user-1", 821),
        ("checkout-v2", "user-1", 8696),
        ("checkout-v2", "user-2", 2997),
        ("checkout-v2", "alice", 2815),
        ("", "\u{e9}t\u{e9}", 2346),
        ("exp", "", 3707),
    ];

    #[test]
    fn pinned_vectors() {
        for (seed, id, want) in VECTORS {
            assert_eq!(
                bucket_of(seed.as_bytes(), id.as_bytes()),
                want,
                "{seed:?} {id:?}"
            );
        }
    }

    #[test]
    fn cohort_boundaries() {
        // alice is bucket 2815 under checkout-v2.
        assert!(!in_cohort(b"checkout-v2", b"alice", 2815));
        assert!(in_cohort(b"checkout-v2", b"alice", 2816));
        assert!(!in_cohort(b"checkout-v2", b"alice", 0));
        assert!(in_cohort(b"checkout-v2", b"alice", BUCKETS));
    }

    #[test]
    fn five_percent_of_ten_thousand_and_monotone() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let in5: Vec<&String> = ids
            .iter()
            .filter(|id| in_cohort(b"checkout-v2", id.as_bytes(), 500))
            .collect();
        assert!(
            (450..=550).contains(&in5.len()),
            "5% cohort holds {} of 10000",
            in5.len()
        );
        for id in &in5 {
            assert!(
                in_cohort(b"checkout-v2", id.as_bytes(), 1000),
                "{id} left when 5% -> 10%"
            );
        }
        // Every step up keeps everyone already in.
        for id in ids.iter().take(500) {
            let b = bucket_of(b"checkout-v2", id.as_bytes());
            for bp in [0, 1, 500, 1000, 5000, 9999, 10_000] {
                assert_eq!(in_cohort(b"checkout-v2", id.as_bytes(), bp), b < bp);
            }
        }
    }

    #[test]
    fn seeds_draw_independent_cohorts() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let both = ids
            .iter()
            .filter(|id| {
                in_cohort(b"exp-a", id.as_bytes(), 1000) && in_cohort(b"exp-b", id.as_bytes(), 1000)
            })
            .count();
        // Independent 10% cohorts overlap on about 1% (100 ids); identical ones would on 1000.
        assert!((50..=150).contains(&both), "overlap {both}");
    }
}
