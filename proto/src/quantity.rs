//! Quantities in job specs: cpu in cores, sizes with binary units, durations.
//!
//! Specs are written by people, so each quantity accepts the spellings
//! Kubernetes users know (`0.5` or `500m` cores, `64Mi`, `1m30s`) and always
//! serializes back to one canonical spelling, so a resubmitted spec compares
//! equal to the stored one.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// CPU in thousandths of a core (`0.5` = 500).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpu(pub u64);

/// A size in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(pub u64);

/// A duration in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub u64);

impl Cpu {
    pub fn millis(self) -> u64 {
        self.0
    }

    /// Parses `0.5`, `2`, or `500m`.
    pub fn parse(s: &str) -> Result<Cpu, String> {
        let bad =
            || format!("{s:?} is not a cpu amount (use cores like 0.5 or millicores like 500m)");
        let s = s.trim();
        if let Some(m) = s.strip_suffix('m') {
            return m.parse::<u64>().map(Cpu).map_err(|_| bad());
        }
        let cores: f64 = s.parse().map_err(|_| bad())?;
        Cpu::from_cores(cores).ok_or_else(bad)
    }

    fn from_cores(cores: f64) -> Option<Cpu> {
        if !cores.is_finite() || !(0.0..=1_000_000.0).contains(&cores) {
            return None;
        }
        let millis = cores * 1000.0;
        if (millis - millis.round()).abs() > 1e-6 {
            return None;
        }
        Some(Cpu(millis.round() as u64))
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            let s = format!("{}.{:03}", self.0 / 1000, self.0 % 1000);
            f.write_str(s.trim_end_matches('0'))
        }
    }
}

const UNITS: [(&str, u64); 8] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("k", 1000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
];

impl Size {
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Parses `64Mi`, `1Gi`, `512Ki`, `100M` or a plain byte count.
    pub fn parse(s: &str) -> Result<Size, String> {
        let bad = || format!("{s:?} is not a size (use Ki, Mi, Gi)");
        let t = s.trim();
        let digits_end = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(digits_end);
        if num.is_empty() {
            return Err(bad());
        }
        let mult = if unit.is_empty() {
            1
        } else {
            UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(bad)?.1
        };
        let n: f64 = num.parse().map_err(|_| bad())?;
        let bytes = n * mult as f64;
        if !bytes.is_finite() || bytes > u64::MAX as f64 || bytes.fract() != 0.0 {
            return Err(bad());
        }
        Ok(Size(bytes as u64))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, mult) in [
            ("Ti", 1u64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if self.0 >= mult && self.0.is_multiple_of(mult) {
                return write!(f, "{}{unit}", self.0 / mult);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Duration {
    pub fn millis(self) -> u64 {
        self.0
    }

    pub fn std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }

    pub fn from_secs(s: u64) -> Duration {
        Duration(s * 1000)
    }

    /// Parses Go-style durations: `500ms`, `10s`, `1m30s`, `2h`.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let bad = || format!("{s:?} is not a duration (use ms, s, m, h, e.g. 10s or 1m30s)");
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        if rest == "0" {
            return Ok(Duration(0));
        }
        let mut total: u64 = 0;
        while !rest.is_empty() {
            let end = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if end == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..end].parse().map_err(|_| bad())?;
            rest = &rest[end..];
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let mult = match &rest[..unit_end] {
                "ms" => 1,
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => return Err(bad()),
            };
            total = n
                .checked_mul(mult)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
            rest = &rest[unit_end..];
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0;
        if ms == 0 {
            return f.write_str("0s");
        }
        let mut out = String::new();
        for (unit, mult) in [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
            if ms >= mult {
                out.push_str(&format!("{}{unit}", ms / mult));
                ms %= mult;
            }
        }
        f.write_str(&out)
    }
}

/// Accepts a string, an integer or a float and hands its text to `parse`.
struct TextVisitor<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
    allow_numbers: bool,
}

impl<T> Visitor<'_> for TextVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        if !self.allow_numbers && v != 0 {
            return Err(E::custom(format!("{v} has no unit ({})", self.expecting)));
        }
        (self.parse)(&v.to_string()).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        if v < 0 {
            return Err(E::custom(format!("{v} must not be negative")));
        }
        self.visit_u64(v as u64)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        if !self.allow_numbers {
            return Err(E::custom(format!("{v} has no unit ({})", self.expecting)));
        }
        if v < 0.0 {
            return Err(E::custom(format!("{v} must not be negative")));
        }
        (self.parse)(&v.to_string()).map_err(E::custom)
    }
}

macro_rules! text_serde {
    ($ty:ty, $expecting:expr, $numbers:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(TextVisitor {
                    expecting: $expecting,
                    parse: <$ty>::parse,
                    allow_numbers: $numbers,
                })
            }
        }
    };
}

text_serde!(Cpu, "cores like 0.5 or millicores like 500m", true);
text_serde!(Size, "a size like 64Mi", true);
text_serde!(Duration, "a duration like 10s or 1m30s", false);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_parses_cores_and_millicores() {
        assert_eq!(Cpu::parse("0.5"), Ok(Cpu(500)));
        assert_eq!(Cpu::parse("2"), Ok(Cpu(2000)));
        assert_eq!(Cpu::parse("250m"), Ok(Cpu(250)));
        assert!(Cpu::parse("0.0005").is_err());
        assert!(Cpu::parse("-1").is_err());
        assert!(Cpu::parse("lots").unwrap_err().contains("not a cpu amount"));
        assert_eq!(Cpu(500).to_string(), "0.5");
        assert_eq!(Cpu(2000).to_string(), "2");
        assert_eq!(Cpu(1250).to_string(), "1.25");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(Size::parse("64Mi"), Ok(Size(64 << 20)));
        assert_eq!(Size::parse("1Gi"), Ok(Size(1 << 30)));
        assert_eq!(Size::parse("100M"), Ok(Size(100_000_000)));
        assert_eq!(Size::parse("4096"), Ok(Size(4096)));
        assert_eq!(Size::parse("1.5Gi"), Ok(Size(3 << 29)));
        assert_eq!(
            Size::parse("64XB").unwrap_err(),
            "\"64XB\" is not a size (use Ki, Mi, Gi)"
        );
        assert!(Size::parse("Mi").is_err());
        assert_eq!(Size(64 << 20).to_string(), "64Mi");
        assert_eq!(Size(1000).to_string(), "1000");
    }

    #[test]
    fn durations_parse_go_style() {
        assert_eq!(Duration::parse("10s"), Ok(Duration(10_000)));
        assert_eq!(Duration::parse("1m30s"), Ok(Duration(90_000)));
        assert_eq!(Duration::parse("500ms"), Ok(Duration(500)));
        assert_eq!(Duration::parse("0"), Ok(Duration(0)));
        assert!(Duration::parse("10").is_err());
        assert!(Duration::parse("s").is_err());
        assert!(Duration::parse("10x").is_err());
        assert_eq!(Duration(90_500).to_string(), "1m30s500ms");
    }

    #[test]
    fn canonical_forms_round_trip() {
        for s in ["0.5", "3", "0.125"] {
            assert_eq!(Cpu::parse(s).unwrap().to_string(), s);
        }
        for s in ["64Mi", "2Gi", "123"] {
            assert_eq!(Size::parse(s).unwrap().to_string(), s);
        }
        for s in ["10s", "1m30s", "2h", "250ms"] {
            assert_eq!(Duration::parse(s).unwrap().to_string(), s);
        }
    }
}
