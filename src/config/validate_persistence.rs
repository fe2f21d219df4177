//! Validation of an upstream's persistence keys (`persistence_timeout` and the keys that refine
//! it). A child of `validate.rs`, sharing its `Validator`; same rules: every problem collected with
//! its line, column and key path.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::super::toml::UpstreamToml;
use super::super::{defaults, PersistenceConfig};
use super::Validator;

impl Validator<'_, '_> {
    /// The persistence settings of an upstream; `None` when `persistence_timeout` is absent (the
    /// other keys alone are an error: they would silently do nothing).
    pub(super) fn persistence(
        &mut self,
        base: &str,
        u: &UpstreamToml,
    ) -> Option<PersistenceConfig> {
        let key = |field: &str| format!("{base}.{field}");
        let Some(timeout) = u.persistence_timeout.as_ref() else {
            let refinements = [
                (
                    "persistence_granularity",
                    u.persistence_granularity.as_ref().map(|v| v.span().start),
                ),
                (
                    "persistence_granularity_v6",
                    u.persistence_granularity_v6
                        .as_ref()
                        .map(|v| v.span().start),
                ),
                (
                    "persistence_max_entries",
                    u.persistence_max_entries.as_ref().map(|v| v.span().start),
                ),
            ];
            for (name, at) in refinements {
                if let Some(at) = at {
                    self.error(
                        at,
                        &key(name),
                        "has no effect without persistence_timeout; add persistence_timeout = \"300s\"",
                    );
                }
            }
            return None;
        };
        let timeout = self
            .duration(
                Some(timeout),
                &key("persistence_timeout"),
                Duration::from_millis(1),
                defaults::DURATION_MAX,
            )
            .unwrap_or(Duration::from_secs(300));
        let granularity_v4 = match &u.persistence_granularity {
            None => 32,
            Some(raw) => match parse_v4_granularity(raw.get_ref()) {
                Some(bits) => bits,
                None => {
                    self.error(
                        raw.span().start,
                        &key("persistence_granularity"),
                        format!(
                            "{:?} is not an IPv4 netmask; allowed: a contiguous netmask such as \"255.255.255.0\", or a prefix length \"/0\"..=\"/32\"",
                            raw.get_ref()
                        ),
                    );
                    32
                }
            },
        };
        let granularity_v6 = self.int(
            u.persistence_granularity_v6.as_ref(),
            &key("persistence_granularity_v6"),
            0,
            128,
            128,
        );
        let max_entries = self.int(
            u.persistence_max_entries.as_ref(),
            &key("persistence_max_entries"),
            1,
            i64::try_from(defaults::PERSISTENCE_MAX_ENTRIES_MAX).unwrap_or(i64::MAX),
            i64::try_from(defaults::PERSISTENCE_MAX_ENTRIES).unwrap_or(i64::MAX),
        );
        Some(PersistenceConfig {
            timeout,
            granularity_v4,
            granularity_v6: u8::try_from(granularity_v6).unwrap_or(128),
            max_entries: u64::try_from(max_entries).unwrap_or(defaults::PERSISTENCE_MAX_ENTRIES),
        })
    }
}

/// A netmask (`255.255.255.0`, contiguous ones only) or a prefix length (`/24`) as a prefix
/// length.
fn parse_v4_granularity(text: &str) -> Option<u8> {
    if let Some(bits) = text.strip_prefix('/') {
        return bits.parse::<u8>().ok().filter(|b| *b <= 32);
    }
    let mask = text.parse::<Ipv4Addr>().ok()?.to_bits();
    let ones = mask.leading_ones();
    // Contiguous: the ones are all leading.
    (mask.count_ones() == ones).then(|| u8::try_from(ones).ok())?
}

#[cfg(test)]
mod tests {
    use super::parse_v4_granularity;

    #[test]
    fn netmasks_and_prefix_lengths_are_read() {
        assert_eq!(parse_v4_granularity("255.255.255.0"), Some(24));
        assert_eq!(parse_v4_granularity("255.255.255.255"), Some(32));
        assert_eq!(parse_v4_granularity("0.0.0.0"), Some(0));
        assert_eq!(parse_v4_granularity("/16"), Some(16));
        assert_eq!(parse_v4_granularity("255.0.255.0"), None, "not contiguous");
        assert_eq!(parse_v4_granularity("/33"), None);
        assert_eq!(parse_v4_granularity("24"), None);
    }
}
