//! A small seeded generator (SplitMix64). Draws that must be identical for every governor
//! (frame jitter, sensor noise) are keyed by what they belong to (app, frame number, tick)
//! rather than taken from a shared stream, so one governor running more inferences than
//! another does not shift the noise the other sees.

#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator for one purpose, independent of other keys under the same seed.
    pub fn keyed(seed: u64, a: u64, b: u64) -> Rng {
        Rng(mix(seed
            ^ mix(a.wrapping_add(0x9e37_79b9))
            ^ mix(b).rotate_left(17)))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Exponential with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.unit().ln()
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_draws_and_keys_are_independent() {
        let a: Vec<u64> = (0..4).map(|_| Rng::keyed(7, 1, 2).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::keyed(7, 1, 2).next_u64(),
            Rng::keyed(7, 1, 3).next_u64()
        );
        assert_ne!(
            Rng::keyed(7, 1, 2).next_u64(),
            Rng::keyed(8, 1, 2).next_u64()
        );
    }

    #[test]
    fn normal_draws_have_unit_spread() {
        let mut r = Rng::new(3);
        let xs: Vec<f64> = (0..20_000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
