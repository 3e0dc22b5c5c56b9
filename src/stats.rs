//! cgroup statistics as the metrics types containerd decodes (`ctr task metrics`, the CRI's
//! container stats): `io.containerd.cgroups.v1.Metrics` or `io.containerd.cgroups.v2.Metrics`.

use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use wasm_shim_container::cgroup::{Stats, Version};

pub fn v1_metrics(s: &Stats) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    m.pids = MessageField::some(v1::PidsStat { current: s.pids_current, limit: s.pids_limit, ..Default::default() });
    m.cpu = MessageField::some(v1::CPUStat {
        usage: MessageField::some(v1::CPUUsage {
            total: s.cpu_usage_ns,
            kernel: s.cpu_system_ns,
            user: s.cpu_user_ns,
            ..Default::default()
        }),
        throttling: MessageField::some(v1::Throttle {
            periods: s.cpu_nr_periods,
            throttled_periods: s.cpu_nr_throttled,
            throttled_time: s.cpu_throttled_ns,
            ..Default::default()
        }),
        ..Default::default()
    });
    m.memory = MessageField::some(v1::MemoryStat {
        cache: s.memory_cache,
        rss: s.memory_rss,
        total_cache: s.memory_cache,
        total_rss: s.memory_rss,
        usage: MessageField::some(v1::MemoryEntry {
            limit: s.memory_limit,
            usage: s.memory_usage,
            max: s.memory_max_usage,
            ..Default::default()
        }),
        swap: MessageField::some(v1::MemoryEntry { usage: s.swap_usage, ..Default::default() }),
        ..Default::default()
    });
    m.memory_oom_control = MessageField::some(v1::MemoryOomControl { oom_kill: s.oom_kills, ..Default::default() });
    m
}

pub fn v2_metrics(s: &Stats) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    m.pids = MessageField::some(v2::PidsStat { current: s.pids_current, limit: s.pids_limit, ..Default::default() });
    m.cpu = MessageField::some(v2::CPUStat {
        usage_usec: s.cpu_usage_ns / 1000,
        user_usec: s.cpu_user_ns / 1000,
        system_usec: s.cpu_system_ns / 1000,
        nr_periods: s.cpu_nr_periods,
        nr_throttled: s.cpu_nr_throttled,
        throttled_usec: s.cpu_throttled_ns / 1000,
        ..Default::default()
    });
    m.memory = MessageField::some(v2::MemoryStat {
        anon: s.memory_rss,
        file: s.memory_cache,
        usage: s.memory_usage,
        usage_limit: s.memory_limit,
        max_usage: s.memory_max_usage,
        swap_usage: s.swap_usage,
        ..Default::default()
    });
    m.memory_events = MessageField::some(v2::MemoryEvents { oom: s.oom_events, oom_kill: s.oom_kills, ..Default::default() });
    m
}

/// The type name is spelled out, and the message encoded through the generic `Message`, not
/// `MessageDyn` (whose `write_to_bytes_dyn` names the message by its descriptor): the first
/// reflective lookup builds the descriptors of the whole proto file and its imports, hundreds
/// of KiB of heap a shim would keep for its pod's life (the kubelet asks for stats every few
/// seconds).
fn pack<M: Message>(type_url: &str, msg: &M) -> Result<Any, String> {
    let value = msg.write_to_bytes().map_err(|e| e.to_string())?;
    Ok(Any { type_url: type_url.to_string(), value, ..Default::default() })
}

pub fn to_any(version: Version, s: &Stats) -> Result<Any, String> {
    match version {
        Version::V1 => pack("io.containerd.cgroups.v1.Metrics", &v1_metrics(s)),
        Version::V2 => pack("io.containerd.cgroups.v2.Metrics", &v2_metrics(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::MessageFull;

    #[test]
    fn stats_land_in_the_type_containerd_decodes() {
        let s = Stats { memory_usage: 4096, memory_limit: 1 << 26, cpu_usage_ns: 5000, pids_current: 1, oom_kills: 2, ..Default::default() };
        let any = to_any(Version::V1, &s).unwrap();
        assert_eq!(any.type_url, v1::Metrics::descriptor().full_name());
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let back = v1::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back.memory.usage.usage, 4096);
        assert_eq!(back.memory.usage.limit, 1 << 26);
        assert_eq!(back.cpu.usage.total, 5000);
        assert_eq!(back.memory_oom_control.oom_kill, 2);

        let any = to_any(Version::V2, &s).unwrap();
        assert_eq!(any.type_url, v2::Metrics::descriptor().full_name());
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let back = v2::Metrics::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back.memory.usage, 4096);
        assert_eq!(back.cpu.usage_usec, 5);
        assert_eq!(back.pids.current, 1);
        assert_eq!(back.memory_events.oom_kill, 2);
    }
}
