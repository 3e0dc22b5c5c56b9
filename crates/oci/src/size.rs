//! The one grammar for byte sizes, in annotations and in the shim's `WASM_SHIM_*` settings
//! alike: Kubernetes' quantity suffixes, so a size reads the same next to a pod's
//! `resources.limits`.
//!
//! | written | means |
//! |---|---|
//! | `1048576` | bytes |
//! | `512k`, `512K` | 512 × 1000 |
//! | `512M`, `1G`, `1T` | × 10^6, 10^9, 10^12 |
//! | `512Ki`, `512Mi`, `1Gi`, `1Ti` | × 2^10, 2^20, 2^30, 2^40 |
//!
//! A trailing `B` is accepted (`512MiB`, `512MB`). Fractions, a lowercase `m` (Kubernetes'
//! milli), other suffixes and overflow are refused.

/// How a size is written, for error messages.
pub const SIZE_GRAMMAR: &str = "bytes, or a whole number with k, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti (powers of 1024)";

/// Parses a size written as [`SIZE_GRAMMAR`] says.
pub fn parse_size(value: &str) -> Option<u64> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    if number.is_empty() {
        return None;
    }
    let n: u64 = number.parse().ok()?;
    let unit = unit.trim();
    let unit = unit.strip_suffix('B').filter(|u| !u.is_empty()).unwrap_or(unit);
    let factor: u64 = match unit {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_and_binary_units_as_kubernetes_writes_them() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("64k"), Some(64_000));
        assert_eq!(parse_size("64K"), Some(64_000));
        assert_eq!(parse_size("512M"), Some(512_000_000));
        assert_eq!(parse_size("1G"), Some(1_000_000_000));
        assert_eq!(parse_size("2T"), Some(2_000_000_000_000));
        assert_eq!(parse_size("512Ki"), Some(512 << 10));
        assert_eq!(parse_size("512Mi"), Some(512 << 20));
        assert_eq!(parse_size("2Gi"), Some(2 << 30));
        assert_eq!(parse_size("1Ti"), Some(1 << 40));
        assert_eq!(parse_size("10MiB"), Some(10 << 20));
        assert_eq!(parse_size("10MB"), Some(10_000_000));
        assert_eq!(parse_size(" 16Mi "), Some(16 << 20));
        assert_eq!(parse_size("16 Mi"), Some(16 << 20));
    }

    #[test]
    fn everything_else_is_refused() {
        for bad in ["", "G", "Gi", "1.5G", "512m", "1g", "1gi", "-1", "1 KB B", "1Pi", "1B B", "B", "99999999999999Gi", "1e9"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }
}
