//! Token buckets: a burst, then a steady trickle. [`TokenBucket`] bounds the copies sent to
//! the canary (`mirror.max_per_second`); [`LogLimiter`] the mismatch lines, which are for a
//! person reading the log and at thousands of requests per second must not become the load.

/// `burst` tokens to start with and at most, refilled at `per_second`; time in milliseconds.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: u32,
    per_second: u32,
    tokens_milli: u64,
    last_ms: u64,
}

impl TokenBucket {
    pub fn new(burst: u32, per_second: u32) -> Self {
        TokenBucket {
            burst,
            per_second,
            tokens_milli: u64::from(burst).saturating_mul(1000),
            last_ms: 0,
        }
    }

    /// Takes a token at `now_ms` if there is one. A clock that goes backwards refills nothing.
    pub fn take(&mut self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        let cap = u64::from(self.burst).saturating_mul(1000);
        self.tokens_milli = self
            .tokens_milli
            .saturating_add(elapsed.saturating_mul(u64::from(self.per_second)))
            .min(cap);
        if self.tokens_milli >= 1000 {
            self.tokens_milli = self.tokens_milli.saturating_sub(1000);
            true
        } else {
            false
        }
    }
}

pub struct LogLimiter {
    bucket: TokenBucket,
    /// Lines dropped since the last one let through, to report with it.
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(burst: u32, per_second: u32) -> Self {
        LogLimiter {
            bucket: TokenBucket::new(burst, per_second),
            suppressed: 0,
        }
    }

    /// Whether a line may be written at `now_ms`; `Some(n)` lets it through, with the number
    /// of lines suppressed before it.
    pub fn allow(&mut self, now_ms: u64) -> Option<u64> {
        if self.bucket.take(now_ms) {
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn burst_then_trickle() {
        let mut l = LogLimiter::new(3, 1);
        let t0 = 1_000_000;
        let first: Vec<Option<u64>> = (0..5).map(|_| l.allow(t0)).collect();
        assert_eq!(first, [Some(0), Some(0), Some(0), None, None]);
        assert_eq!(l.allow(t0 + 500), None);
        assert_eq!(l.allow(t0 + 1000), Some(3), "reports the 3 it dropped");
        assert_eq!(l.allow(t0 + 1000), None);
        // A long quiet spell refills only up to the burst.
        let later: Vec<bool> = (0..5).map(|_| l.allow(t0 + 60_000).is_some()).collect();
        assert_eq!(later, [true, true, true, false, false]);
        // A clock that goes backwards neither refills nor panics.
        assert_eq!(l.allow(0), None);
    }

    #[test]
    fn bucket_rates() {
        // (burst, per second, steps of (ms later, tokens wanted), tokens granted per step)
        type Case = (u32, u32, &'static [(u64, u32)], &'static [u32]);
        let cases: &[Case] = &[
            // A second's worth at once, then one every 20 ms at 50/s.
            (
                50,
                50,
                &[(0, 60), (10, 5), (10, 5), (1000, 100)],
                &[50, 0, 1, 50],
            ),
            // One a second: the fraction carries over between calls.
            (
                1,
                1,
                &[(0, 3), (500, 1), (500, 1), (999, 1), (1, 1)],
                &[1, 0, 1, 0, 1],
            ),
            // No burst, no tokens ever.
            (0, 100, &[(0, 1), (1000, 1)], &[0, 0]),
        ];
        for (burst, rate, steps, want) in cases {
            let mut b = TokenBucket::new(*burst, *rate);
            let mut now = 1_000_000;
            let mut got = Vec::new();
            for (later, n) in *steps {
                now += later;
                got.push((0..*n).filter(|_| b.take(now)).count() as u32);
            }
            assert_eq!(got, *want, "burst {burst} rate {rate}");
        }
    }
}
