//! The device a run trains on, parsed once: `cpu`, `cuda`, `cuda:N` or `auto`.
//!
//! Candle-free on purpose, so `spec` (validation), the CLI (`--devices`), `launch` (dealing
//! cards to workers), the worker's environment and `store` (the runtime record) share one
//! parser and one spelling without loading the tensor library; `train` maps a [`Device`] to a
//! Candle device. Specs and `config.toml` keep the device as text, so run IDs do not change:
//! [`Display`](std::fmt::Display) writes back exactly what [`FromStr`] read.

use std::fmt;
use std::str::FromStr;

/// A device name as `train.device`, `launch.devices` and `--devices` accept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// A CUDA card: `cuda` (`None`, the first card) or `cuda:N`.
    Cuda(Option<usize>),
    /// CUDA when this build has it and a card opens, else the CPU.
    Auto,
}

/// What [`Device::from_str`] accepts, for error messages.
pub const ALLOWED: &str = "allowed: \"cpu\", \"cuda\", \"cuda:N\", \"auto\"";

/// A device name that is none of [`ALLOWED`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a device; {ALLOWED}")]
pub struct ParseDeviceError {
    /// The text as given.
    pub value: String,
}

impl Device {
    /// True for `cuda` and `cuda:N`: a card the launcher deals runs onto. `cpu` and `auto`
    /// need no card of their own.
    pub fn is_card(self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

impl FromStr for Device {
    type Err = ParseDeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDeviceError {
            value: s.to_string(),
        };
        match s {
            "cpu" => Ok(Device::Cpu),
            "auto" => Ok(Device::Auto),
            "cuda" => Ok(Device::Cuda(None)),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(err)?;
                // Digits only: `usize::from_str` would also take `+1`, which is no card name.
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err());
                }
                n.parse().map(|n| Device::Cuda(Some(n))).map_err(|_| err())
            }
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Auto => f.write_str("auto"),
            Device::Cuda(None) => f.write_str("cuda"),
            Device::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl serde::Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_parse_and_print_back() {
        for (text, dev) in [
            ("cpu", Device::Cpu),
            ("auto", Device::Auto),
            ("cuda", Device::Cuda(None)),
            ("cuda:0", Device::Cuda(Some(0))),
            ("cuda:12", Device::Cuda(Some(12))),
        ] {
            assert_eq!(text.parse::<Device>(), Ok(dev));
            assert_eq!(dev.to_string(), text);
        }
    }

    #[test]
    fn other_names_are_refused_with_what_is_allowed() {
        for bad in [
            "gpu", "cuda:", "cuda:x", "", "CPU", "cuda:+1", "cuda:-1", " cpu", "cuda0", "cuda:1 ",
        ] {
            let e = bad.parse::<Device>().unwrap_err().to_string();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("cuda:N"),
                "{e}"
            );
        }
    }

    #[test]
    fn only_cuda_names_a_card() {
        assert!(Device::Cuda(None).is_card() && Device::Cuda(Some(1)).is_card());
        assert!(!Device::Cpu.is_card() && !Device::Auto.is_card());
    }

    proptest! {
        /// Whatever parses prints back to the same text (card numbers written without
        /// leading zeros), so a device keeps its spelling wherever it is passed on.
        #[test]
        fn parse_then_print_is_the_identity(s in "(cpu|auto|cuda|cuda:(0|[1-9][0-9]{0,3})|[a-z:1-9]{0,6})") {
            if let Ok(d) = s.parse::<Device>() {
                prop_assert_eq!(d.to_string(), s);
            }
        }
    }
}
