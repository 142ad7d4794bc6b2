//! Deterministic randomness for request generation: every request is derived from its index
//! and the run's seed, so every system sees the same sequence of requests.

/// SplitMix64: a fast, well-mixed 64-bit hash, good enough to derive request choices.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small generator seeded from (seed, request index).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn for_request(seed: u64, index: u64) -> Self {
        Self(splitmix64(seed ^ splitmix64(index)))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.0)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf-distributed ranks `0..n` (rank 0 the most popular), by inverse CDF.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, exponent: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 1..=n {
            total += 1.0 / (rank as f64).powf(exponent);
            cdf.push(total);
        }
        for p in &mut cdf {
            *p /= total;
        }
        Self { cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|p| *p < u).min(self.cdf.len().saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_is_deterministic() {
        let mut a = Rng::for_request(7, 42);
        let mut b = Rng::for_request(7, 42);
        for _ in 0..1000 {
            let x = a.below(10);
            assert!(x < 10);
            assert_eq!(x, b.below(10));
        }
    }

    #[test]
    fn zipf_prefers_low_ranks() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = Rng::for_request(1, 1);
        let mut counts = [0usize; 3];
        for _ in 0..100_000 {
            let r = zipf.sample(&mut rng);
            assert!(r < 1000);
            if r < 3 {
                counts[r] += 1;
            }
        }
        // P(rank 0) = 1 / H(1000) ≈ 0.134, rank 1 half of that.
        assert!(counts[0] > 12_000 && counts[0] < 15_000, "{counts:?}");
        assert!(counts[1] > 6_000 && counts[1] < 7_500, "{counts:?}");
    }
}
