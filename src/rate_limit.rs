//! A token bucket for log lines: a burst, then a steady trickle. Mismatch lines are for a
//! person reading the log; at thousands of requests per second they must not become the load.

pub struct LogLimiter {
    burst: u32,
    per_second: u32,
    tokens_milli: u64,
    last_ms: u64,
    /// Lines dropped since the last one let through, to report with it.
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(burst: u32, per_second: u32) -> Self {
        LogLimiter {
            burst,
            per_second,
            tokens_milli: u64::from(burst) * 1000,
            last_ms: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be written at `now_ms`; `Some(n)` lets it through, with the number
    /// of lines suppressed before it.
    pub fn allow(&mut self, now_ms: u64) -> Option<u64> {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        let cap = u64::from(self.burst) * 1000;
        self.tokens_milli = self
            .tokens_milli
            .saturating_add(elapsed.saturating_mul(u64::from(self.per_second)))
            .min(cap);
        if self.tokens_milli >= 1000 {
            self.tokens_milli = self.tokens_milli.saturating_sub(1000);
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
}
