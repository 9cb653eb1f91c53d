//! Physical units as types. Every conversion between raw numbers and units happens here, so a
//! kHz/Hz or ms/ns mix-up cannot hide in arithmetic elsewhere.

use serde::{Deserialize, Serialize};

/// A clock frequency in hertz (devfreq reports Hz, cpufreq kHz: convert with [`Hz::from_khz`]).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hz(pub u64);

impl Hz {
    pub const fn from_khz(khz: u64) -> Hz {
        Hz(khz * 1_000)
    }

    pub const fn from_mhz(mhz: u64) -> Hz {
        Hz(mhz * 1_000_000)
    }

    pub const fn khz(self) -> u64 {
        self.0 / 1_000
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64
    }
}

/// A point in time or a duration, in nanoseconds of the caller's monotonic clock.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Nanos(pub u64);

impl Nanos {
    pub const ZERO: Nanos = Nanos(0);

    pub const fn from_micros(us: u64) -> Nanos {
        Nanos(us * 1_000)
    }

    pub const fn from_millis(ms: u64) -> Nanos {
        Nanos(ms * 1_000_000)
    }

    /// Fractional milliseconds, as apps declare deadlines and latencies; negative and NaN
    /// inputs become zero rather than wrapping.
    pub fn from_millis_f64(ms: f64) -> Nanos {
        if ms.is_finite() && ms > 0.0 {
            Nanos((ms * 1e6).round() as u64)
        } else {
            Nanos(0)
        }
    }

    pub fn as_millis_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    /// Counter deltas go through here: a counter that went backwards (a CPU that was
    /// unplugged and came back) yields zero instead of a huge value.
    pub fn saturating_sub(self, earlier: Nanos) -> Nanos {
        Nanos(self.0.saturating_sub(earlier.0))
    }

    pub fn saturating_add(self, more: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(more.0))
    }
}

/// Electrical power in watts.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct Watts(pub f64);

impl Watts {
    pub fn from_milliwatts(mw: f64) -> Watts {
        Watts(mw / 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn khz_and_mhz_convert_to_hz() {
        assert_eq!(Hz::from_khz(1_190_400), Hz(1_190_400_000));
        assert_eq!(Hz::from_mhz(1109), Hz(1_109_000_000));
        assert_eq!(Hz(1_907_200_000).khz(), 1_907_200);
    }

    #[test]
    fn fractional_millis_round_and_reject_nonsense() {
        assert_eq!(Nanos::from_millis_f64(41.16), Nanos(41_160_000));
        assert_eq!(Nanos::from_millis_f64(-3.0), Nanos(0));
        assert_eq!(Nanos::from_millis_f64(f64::NAN), Nanos(0));
        assert_eq!(Nanos::from_millis(60).as_millis_f64(), 60.0);
    }

    #[test]
    fn counter_going_backwards_gives_zero_delta() {
        assert_eq!(Nanos(5).saturating_sub(Nanos(9)), Nanos(0));
        assert_eq!(Nanos(9).saturating_sub(Nanos(5)), Nanos(4));
        assert_eq!(Nanos(u64::MAX).saturating_add(Nanos(5)), Nanos(u64::MAX));
    }
}
