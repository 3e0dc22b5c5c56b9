//! Tests of the `Cgroup` API against temp-dir fixtures that mimic cgroupfs (v1 and v2), plus one
//! test against the real v1 hierarchy when run as root.

use std::fs;
use std::path::Path;
use std::time::Duration;

use super::*;

const MIB: i64 = 1024 * 1024;

fn put(path: &Path, body: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, body).unwrap();
}

fn get(path: &Path) -> String {
    fs::read_to_string(path).unwrap()
}

// ---------------------------------------------------------------------------------------------
// v2 fixtures

/// A unified root offering the usual controllers, with cpu and memory already enabled for
/// children, and an existing `default` parent that offers cpu, memory and pids only.
fn v2_tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    put(
        &r.join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    );
    put(&r.join("cgroup.subtree_control"), "cpu memory\n");
    put(&r.join("default/cgroup.controllers"), "cpu memory pids\n");
    put(&r.join("default/cgroup.subtree_control"), "\n");
    t
}

/// Control files of a fresh v2 leaf at `<root>/default/t1`.
fn v2_leaf(root: &Path) -> PathBuf {
    let d = root.join("default/t1");
    for (f, v) in [
        ("memory.max", "max\n"),
        ("memory.low", "0\n"),
        ("memory.swap.max", "max\n"),
        ("cpu.weight", "100\n"),
        ("cpu.max", "max 100000\n"),
        ("pids.max", "max\n"),
        ("cpuset.cpus", "\n"),
        ("cpuset.mems", "\n"),
        ("cgroup.procs", ""),
        ("cgroup.freeze", "0\n"),
        ("cgroup.events", "populated 0\nfrozen 0\n"),
    ] {
        put(&d.join(f), v);
    }
    d
}

#[test]
fn detect_by_cgroup_controllers() {
    let t = v2_tree();
    assert_eq!(detect(t.path()), Version::V2);
    let t1 = v1_tree();
    assert_eq!(detect(t1.path()), Version::V1);
    assert_eq!(Cgroup::new(t.path(), "/a").unwrap().version(), Version::V2);
    assert_eq!(Cgroup::new(t1.path(), "/a").unwrap().version(), Version::V1);
}

#[test]
fn new_rejects_unnormalized_paths() {
    let t = v2_tree();
    for bad in ["a/b", "/a/../b", "/", ""] {
        let err = Cgroup::new(t.path(), bad).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidPath { .. }),
            "{bad}: {err}"
        );
    }
    assert_eq!(Cgroup::new(t.path(), "/a//b/").unwrap().path(), "/a/b");
}

#[test]
fn v2_create_enables_offered_controllers_in_ancestors_only() {
    let t = v2_tree();
    let r = t.path();
    let cg = Cgroup::new(r, "/default/t1").unwrap();
    cg.create().unwrap();
    assert!(r.join("default/t1").is_dir());
    // Root already had cpu and memory: only the missing offered ones are added.
    assert_eq!(get(&r.join("cgroup.subtree_control")), "+pids +cpuset +io");
    // `default` offers no cpuset/io, so they are not requested there.
    assert_eq!(
        get(&r.join("default/cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    // Nothing is enabled in the leaf itself.
    assert!(!r.join("default/t1/cgroup.subtree_control").exists());
    assert_eq!(cg.paths(), vec![r.join("default/t1")]);
}

#[test]
fn v2_create_skips_enabled_controllers() {
    let t = v2_tree();
    let r = t.path();
    put(
        &r.join("cgroup.subtree_control"),
        "cpuset cpu io memory pids\n",
    );
    Cgroup::new(r, "/default/x").unwrap().create().unwrap();
    assert_eq!(
        get(&r.join("cgroup.subtree_control")),
        "cpuset cpu io memory pids\n"
    );
}

#[test]
fn v2_create_error_names_missing_file() {
    let t = v2_tree();
    // `other` is created by us; in a fixture it has no cgroup.controllers (a real one would).
    let err = Cgroup::new(t.path(), "/other/t1")
        .unwrap()
        .create()
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("cgroup: read "), "{msg}");
    assert!(
        msg.contains("other/cgroup.controllers: No such file or directory"),
        "{msg}"
    );
}

#[test]
fn shares_to_weight_conversion() {
    use super::v2::shares_to_weight;
    assert_eq!(shares_to_weight(1024), 39);
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(262_144), 10_000);
    assert_eq!(shares_to_weight(100), 4);
    assert_eq!(shares_to_weight(0), 1);
    assert_eq!(shares_to_weight(10_000_000), 10_000);
}

/// `linux.resources.unified` (kubelet's `memory.swap.max=0`) is written as given after the
/// fields, checked whole before anything is written; refused on v1, and for a path or a core
/// `cgroup.*` file.
#[test]
fn v2_unified_written_as_given_and_checked_first() {
    let t = v2_tree();
    let d = v2_leaf(t.path());
    let cg = Cgroup::new(t.path(), "/default/t1").unwrap();
    let unified = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    cg.apply(&Resources { memory_swap: Some(-1), unified: unified(&[("memory.swap.max", "0")]), ..Default::default() }).unwrap();
    assert_eq!(get(&d.join("memory.swap.max")), "0", "the unified value wins over the field");
    // A file the cgroup has not: nothing written at all.
    let err = cg
        .apply(&Resources { pids_limit: Some(7), unified: unified(&[("io.max", "8:0 rbps=1")]), ..Default::default() })
        .unwrap_err();
    assert!(err.to_string().contains("io.max"), "{err}");
    assert_eq!(get(&d.join("pids.max")), "max\n");
    for bad in ["cgroup.procs", "cgroup.kill", "../memory.max", "memory", "memory./x", ".max", "Memory.max"] {
        let mut spec = oci_spec::runtime::LinuxResources::default();
        spec.set_unified(Some([(bad.to_string(), "1".to_string())].into_iter().collect()));
        let err = Resources::from_spec(&spec).unwrap_err();
        assert!(err.to_string().contains(bad), "{bad}: {err}");
    }
    let mut spec = oci_spec::runtime::LinuxResources::default();
    spec.set_unified(Some([("memory.swap.max".to_string(), "0".to_string()), ("memory.high".to_string(), "max".to_string())].into_iter().collect()));
    assert_eq!(Resources::from_spec(&spec).unwrap().unified, unified(&[("memory.high", "max"), ("memory.swap.max", "0")]), "in key order");
    // v1: refused.
    let t1 = v1_tree();
    let cg1 = Cgroup::new(t1.path(), "/default/t1").unwrap();
    let err = cg1.apply(&Resources { unified: unified(&[("memory.swap.max", "0")]), ..Default::default() }).unwrap_err();
    assert!(err.to_string().contains("cgroup v2"), "{err}");
}

#[test]
fn v2_apply_writes_limits_and_reads_them_back() {
    let t = v2_tree();
    let d = v2_leaf(t.path());
    let cg = Cgroup::new(t.path(), "/default/t1").unwrap();
    let res = Resources {
        memory_limit: Some(128 * MIB),
        memory_reservation: Some(64 * MIB),
        memory_swap: Some(192 * MIB),
        cpu_shares: Some(1024),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        cpuset_cpus: Some("0-1".into()),
        cpuset_mems: Some("0".into()),
        pids_limit: Some(10),
        devices: None,
        unified: Vec::new(),
    };
    cg.apply(&res).unwrap();
    assert_eq!(get(&d.join("memory.max")), (128 * MIB).to_string());
    assert_eq!(get(&d.join("memory.low")), (64 * MIB).to_string());
    assert_eq!(get(&d.join("memory.swap.max")), (64 * MIB).to_string());
    assert_eq!(get(&d.join("cpu.weight")), "39");
    assert_eq!(get(&d.join("cpu.max")), "50000 100000");
    assert_eq!(get(&d.join("pids.max")), "10");
    assert_eq!(get(&d.join("cpuset.cpus")), "0-1");
    assert_eq!(get(&d.join("cpuset.mems")), "0");

    let back = cg.read_limits().unwrap();
    assert_eq!(
        back,
        Resources {
            cpu_shares: None, // v2 keeps a weight, not shares
            ..res
        }
    );
}

#[test]
fn v2_apply_unlimited_and_partial_updates() {
    let t = v2_tree();
    let d = v2_leaf(t.path());
    put(&d.join("cpu.max"), "20000 50000\n");
    put(&d.join("memory.max"), "1000\n");
    let cg = Cgroup::new(t.path(), "/default/t1").unwrap();
    // Quota only: the period already in the file is kept.
    cg.apply(&Resources {
        cpu_quota: Some(-1),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(get(&d.join("cpu.max")), "max 50000");
    // Period only: the quota already in the file is kept.
    cg.apply(&Resources {
        cpu_period: Some(100_000),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(get(&d.join("cpu.max")), "max 100000");
    cg.apply(&Resources {
        memory_limit: Some(-1),
        memory_swap: Some(-1),
        pids_limit: Some(0),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(get(&d.join("memory.max")), "max");
    assert_eq!(get(&d.join("memory.swap.max")), "max");
    assert_eq!(get(&d.join("pids.max")), "max");
    // Untouched fields stay untouched.
    assert_eq!(get(&d.join("cpu.weight")), "100\n");
    let back = cg.read_limits().unwrap();
    assert_eq!(back.memory_limit, Some(-1));
    assert_eq!(back.memory_swap, Some(-1));
    assert_eq!(back.pids_limit, Some(-1));
    assert_eq!(back.cpu_quota, Some(-1));
    assert_eq!(back.cpu_period, Some(100_000));
}

#[test]
fn v2_swap_is_checked_before_anything_is_written() {
    let t = v2_tree();
    let d = v2_leaf(t.path());
    let cg = Cgroup::new(t.path(), "/default/t1").unwrap();
    let err = cg
        .apply(&Resources {
            memory_limit: Some(100 * MIB),
            memory_swap: Some(50 * MIB),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(err, CgroupError::InvalidResources(_)), "{err}");
    assert_eq!(get(&d.join("memory.max")), "max\n");
    // Swap alone while memory is unlimited cannot be expressed in v2.
    let err = cg
        .apply(&Resources {
            memory_swap: Some(50 * MIB),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("needs a memory limit"), "{err}");
    // Swap alone with a memory limit in place uses that limit.
    put(&d.join("memory.max"), "1048576\n");
    cg.apply(&Resources {
        memory_swap: Some(3 * MIB),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(get(&d.join("memory.swap.max")), (2 * MIB).to_string());
}

#[test]
fn v2_swap_ignored_without_swap_accounting() {
    let t = v2_tree();
    let d = v2_leaf(t.path());
    fs::remove_file(d.join("memory.swap.max")).unwrap();
    let cg = Cgroup::new(t.path(), "/default/t1").unwrap();
    cg.apply(&Resources {
        memory_limit: Some(MIB),
        memory_swap: Some(2 * MIB),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(get(&d.join("memory.max")), MIB.to_string());
    assert!(!d.join("memory.swap.max").exists());
}

#[test]
fn v2_apply_error_names_file() {
    let t = v2_tree();
    let d = v2_leaf(t.path());
    fs::remove_file(d.join("pids.max")).unwrap();
    let cg = Cgroup::new(t.path(), "/default/t1").unwrap();
    let msg = cg
        .apply(&Resources {
            pids_limit: Some(5),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        format!(
            "cgroup: write {}: No such file or directory",
            d.join("pids.max").display()
        )
    );
}

#[test]
fn v2_stats_parse_all_files() {
    let t = v2_tree();
    let d = v2_leaf(t.path());
    put(&d.join("memory.current"), "1000\n");
    put(&d.join("memory.peak"), "2000\n");
    put(
        &d.join("memory.stat"),
        "anon 300\nfile 400\nkernel 9\nfile_mapped 1\n",
    );
    put(&d.join("memory.swap.current"), "5\n");
    put(
        &d.join("memory.events"),
        "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\noom_group_kill 0\n",
    );
    put(
        &d.join("cpu.stat"),
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\nnr_throttled 3\nthrottled_usec 250\n",
    );
    put(&d.join("pids.current"), "4\n");
    put(&d.join("pids.max"), "max\n");
    let cg = Cgroup::new(t.path(), "/default/t1").unwrap();
    let s = cg.stats().unwrap();
    assert_eq!(s.memory_usage, 1000);
    assert_eq!(s.memory_max_usage, 2000);
    assert_eq!(s.memory_limit, u64::MAX);
    assert_eq!(s.memory_rss, 300);
    assert_eq!(s.memory_cache, 400);
    assert_eq!(s.swap_usage, 5);
    assert_eq!((s.oom_events, s.oom_kills), (2, 1));
    assert_eq!(s.cpu_usage_ns, 1_500_000);
    assert_eq!(s.cpu_user_ns, 1_000_000);
    assert_eq!(s.cpu_system_ns, 500_000);
    assert_eq!((s.cpu_nr_periods, s.cpu_nr_throttled), (10, 3));
    assert_eq!(s.cpu_throttled_ns, 250_000);
    assert_eq!((s.pids_current, s.pids_limit), (4, 0));
    assert_eq!(cg.oom_kill_count().unwrap(), 1);

    put(&d.join("pids.max"), "7\n");
    put(&d.join("memory.max"), "4096\n");
    let s = cg.stats().unwrap();
    assert_eq!((s.pids_limit, s.memory_limit), (7, 4096));
}

#[test]
fn v2_stats_missing_files_are_zero_missing_dir_is_not_found() {
    let t = v2_tree();
    fs::create_dir_all(t.path().join("default/empty")).unwrap();
    let s = Cgroup::new(t.path(), "/default/empty")
        .unwrap()
        .stats()
        .unwrap();
    assert_eq!(
        s.memory_usage + s.cpu_usage_ns + s.pids_limit + s.memory_limit + s.oom_kills,
        0
    );
    let cg = Cgroup::new(t.path(), "/default/gone").unwrap();
    let err = cg.stats().unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(cg.oom_kill_count().unwrap(), 0);
}

#[test]
fn v2_freeze_and_thaw() {
    let t = v2_tree();
    let d = v2_leaf(t.path());
    let cg = Cgroup::new(t.path(), "/default/t1").unwrap();
    // The kernel would update cgroup.events; the fixture says what it would say.
    put(&d.join("cgroup.events"), "populated 1\nfrozen 1\n");
    cg.freeze().unwrap();
    assert_eq!(get(&d.join("cgroup.freeze")), "1");
    put(&d.join("cgroup.events"), "populated 1\nfrozen 0\n");
    cg.thaw().unwrap();
    assert_eq!(get(&d.join("cgroup.freeze")), "0");
}

#[test]
fn v2_freeze_times_out_and_thaws_back() {
    let t = v2_tree();
    let d = v2_leaf(t.path());
    let cg = Cgroup::new(t.path(), "/default/t1").unwrap();
    let err = cg.freeze_within(Duration::from_millis(50)).unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::Timeout {
                wanted: "frozen 1",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("cgroup.events"), "{err}");
    assert_eq!(get(&d.join("cgroup.freeze")), "0");
}

#[test]
fn v2_procs_add_process_and_destroy() {
    let t = v2_tree();
    let d = v2_leaf(t.path());
    let cg = Cgroup::new(t.path(), "/default/t1").unwrap();
    cg.add_process(4242).unwrap();
    assert_eq!(get(&d.join("cgroup.procs")), "4242");
    put(&d.join("cgroup.procs"), "1\n22\n333\n");
    assert_eq!(cg.procs().unwrap(), vec![1, 22, 333]);
    put(&d.join("cgroup.procs"), "1\nx\n");
    assert!(matches!(cg.procs().unwrap_err(), CgroupError::Parse { .. }));

    // A fixture dir with files cannot be removed (a real cgroup's files vanish with it).
    assert!(cg.destroy().is_err());
    let empty = Cgroup::new(t.path(), "/default/empty").unwrap();
    fs::create_dir_all(t.path().join("default/empty")).unwrap();
    empty.destroy().unwrap();
    assert!(!t.path().join("default/empty").exists());
    assert!(t.path().join("default").is_dir(), "parents are left alone");
    empty.destroy().unwrap(); // already gone is fine
}

// ---------------------------------------------------------------------------------------------
// v1 fixtures

/// Per-controller hierarchies (no blkio/devices: those are "not mounted"), with a root cpuset,
/// and the cpuset dirs of `/default/t1` pre-made with empty cpus/mems as the kernel makes them.
fn v1_tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    for c in ["memory", "cpu", "cpuacct", "pids", "freezer", "cpuset"] {
        put(&r.join(c).join("cgroup.procs"), "");
    }
    put(&r.join("cpuset/cpuset.cpus"), "0-1\n");
    put(&r.join("cpuset/cpuset.mems"), "0\n");
    for d in ["default", "default/t1"] {
        put(&r.join("cpuset").join(d).join("cpuset.cpus"), "\n");
        put(&r.join("cpuset").join(d).join("cpuset.mems"), "\n");
    }
    t
}

/// Control files of the v1 leaf `/default/t1`.
fn v1_leaf(root: &Path) {
    let leaf = |c: &str, f: &str, v: &str| put(&root.join(c).join("default/t1").join(f), v);
    leaf("memory", "memory.limit_in_bytes", "9223372036854771712\n");
    leaf(
        "memory",
        "memory.soft_limit_in_bytes",
        "9223372036854771712\n",
    );
    leaf(
        "memory",
        "memory.memsw.limit_in_bytes",
        "9223372036854771712\n",
    );
    leaf("cpu", "cpu.shares", "1024\n");
    leaf("cpu", "cpu.cfs_quota_us", "-1\n");
    leaf("cpu", "cpu.cfs_period_us", "100000\n");
    leaf("pids", "pids.max", "max\n");
    leaf("freezer", "freezer.state", "THAWED\n");
    for c in ["memory", "cpu", "cpuacct", "pids", "freezer", "cpuset"] {
        leaf(c, "cgroup.procs", "");
    }
}

#[test]
fn v1_create_makes_every_mounted_hierarchy_and_copies_cpuset() {
    let t = v1_tree();
    let r = t.path();
    let cg = Cgroup::new(r, "/default/t1").unwrap();
    let paths = cg.paths();
    assert_eq!(paths.len(), 6, "{paths:?}");
    cg.create().unwrap();
    for p in &paths {
        assert!(p.is_dir(), "{}", p.display());
    }
    assert!(
        !r.join("blkio").exists(),
        "unmounted controllers are skipped"
    );
    for d in ["default", "default/t1"] {
        assert_eq!(get(&r.join("cpuset").join(d).join("cpuset.cpus")), "0-1");
        assert_eq!(get(&r.join("cpuset").join(d).join("cpuset.mems")), "0");
    }
    // A cpuset that is already set is left alone.
    put(&r.join("cpuset/default/t1/cpuset.cpus"), "1\n");
    cg.create().unwrap();
    assert_eq!(get(&r.join("cpuset/default/t1/cpuset.cpus")), "1\n");
}

#[test]
fn v1_comounted_controllers_share_one_dir() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    fs::create_dir_all(r.join("cpu,cpuacct")).unwrap();
    fs::create_dir_all(r.join("memory")).unwrap();
    std::os::unix::fs::symlink("cpu,cpuacct", r.join("cpu")).unwrap();
    std::os::unix::fs::symlink("cpu,cpuacct", r.join("cpuacct")).unwrap();
    let cg = Cgroup::new(r, "/x").unwrap();
    let mut names: Vec<String> = cg
        .paths()
        .iter()
        .map(|p| {
            p.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names, vec!["cpu,cpuacct", "memory"]);
}

#[test]
fn v1_without_controllers_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let err = Cgroup::new(t.path(), "/x").unwrap_err();
    assert!(
        matches!(err, CgroupError::ControllerMissing { .. }),
        "{err}"
    );
}

#[test]
fn v1_apply_writes_limits_and_reads_them_back() {
    let t = v1_tree();
    let r = t.path();
    v1_leaf(r);
    let cg = Cgroup::new(r, "/default/t1").unwrap();
    let before = cg.read_limits().unwrap();
    assert_eq!(
        before.memory_limit,
        Some(-1),
        "page-rounded i64::MAX reads as unlimited"
    );
    assert_eq!(before.pids_limit, Some(-1));
    assert_eq!(before.cpu_quota, Some(-1));

    let res = Resources {
        memory_limit: Some(64 * MIB),
        memory_reservation: Some(32 * MIB),
        memory_swap: Some(128 * MIB),
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        cpuset_cpus: Some("1".into()),
        cpuset_mems: Some("0".into()),
        pids_limit: Some(10),
        devices: None,
        unified: Vec::new(),
    };
    cg.apply(&res).unwrap();
    let m = r.join("memory/default/t1");
    assert_eq!(
        get(&m.join("memory.limit_in_bytes")),
        (64 * MIB).to_string()
    );
    assert_eq!(
        get(&m.join("memory.soft_limit_in_bytes")),
        (32 * MIB).to_string()
    );
    assert_eq!(
        get(&m.join("memory.memsw.limit_in_bytes")),
        (128 * MIB).to_string()
    );
    let c = r.join("cpu/default/t1");
    assert_eq!(get(&c.join("cpu.shares")), "512");
    assert_eq!(get(&c.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(get(&c.join("cpu.cfs_period_us")), "100000");
    assert_eq!(get(&r.join("pids/default/t1/pids.max")), "10");
    assert_eq!(get(&r.join("cpuset/default/t1/cpuset.cpus")), "1");
    assert_eq!(cg.read_limits().unwrap(), res);

    cg.apply(&Resources {
        memory_limit: Some(-1),
        cpu_quota: Some(-1),
        pids_limit: Some(-1),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(get(&m.join("memory.limit_in_bytes")), "-1");
    assert_eq!(get(&c.join("cpu.cfs_quota_us")), "-1");
    assert_eq!(get(&r.join("pids/default/t1/pids.max")), "max");
    assert_eq!(
        get(&c.join("cpu.shares")),
        "512",
        "unset fields are not written"
    );
}

#[test]
fn v1_swap_needs_memsw_and_must_cover_memory() {
    let t = v1_tree();
    let r = t.path();
    v1_leaf(r);
    let cg = Cgroup::new(r, "/default/t1").unwrap();
    let err = cg
        .apply(&Resources {
            memory_limit: Some(2 * MIB),
            memory_swap: Some(MIB),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(err, CgroupError::InvalidResources(_)), "{err}");
    let memsw = r.join("memory/default/t1/memory.memsw.limit_in_bytes");
    fs::remove_file(&memsw).unwrap();
    cg.apply(&Resources {
        memory_limit: Some(MIB),
        memory_swap: Some(2 * MIB),
        ..Default::default()
    })
    .unwrap();
    assert!(
        !memsw.exists(),
        "no swap accounting: memsw is neither written nor created"
    );
    assert_eq!(
        get(&r.join("memory/default/t1/memory.limit_in_bytes")),
        MIB.to_string()
    );
}

#[test]
fn v1_limit_for_unmounted_controller_is_an_error() {
    let t = v1_tree();
    let r = t.path();
    v1_leaf(r);
    fs::remove_dir_all(r.join("pids")).unwrap();
    let cg = Cgroup::new(r, "/default/t1").unwrap();
    let err = cg
        .apply(&Resources {
            pids_limit: Some(3),
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::ControllerMissing {
                controller: "pids",
                ..
            }
        ),
        "{err}"
    );
    // Procs then come from the memory hierarchy.
    put(&r.join("memory/default/t1/cgroup.procs"), "7\n");
    assert_eq!(cg.procs().unwrap(), vec![7]);
}

#[test]
fn v1_stats_parse_all_files() {
    let t = v1_tree();
    let r = t.path();
    v1_leaf(r);
    let m = r.join("memory/default/t1");
    put(&m.join("memory.usage_in_bytes"), "4096\n");
    put(&m.join("memory.max_usage_in_bytes"), "8192\n");
    put(&m.join("memory.limit_in_bytes"), "67108864\n");
    put(&m.join("memory.memsw.usage_in_bytes"), "5000\n");
    put(
        &m.join("memory.stat"),
        "cache 1\nrss 2\nrss_huge 0\nswap 3\ntotal_cache 10\ntotal_rss 20\ntotal_swap 30\n",
    );
    put(
        &m.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    );
    let a = r.join("cpuacct/default/t1");
    put(&a.join("cpuacct.usage"), "123456789\n");
    put(&a.join("cpuacct.stat"), "user 10\nsystem 5\n");
    put(
        &r.join("cpu/default/t1/cpu.stat"),
        "nr_periods 7\nnr_throttled 2\nthrottled_time 999\nnr_bursts 0\nburst_time 0\n",
    );
    put(&r.join("pids/default/t1/pids.current"), "3\n");
    let cg = Cgroup::new(r, "/default/t1").unwrap();
    let s = cg.stats().unwrap();
    let tick = 1_000_000_000 / super::v1::clk_tck();
    assert_eq!(
        (s.memory_usage, s.memory_max_usage, s.memory_limit),
        (4096, 8192, 67108864)
    );
    assert_eq!(
        (s.memory_cache, s.memory_rss),
        (10, 20),
        "hierarchical totals preferred"
    );
    assert_eq!(s.swap_usage, 5000 - 4096, "memsw usage minus memory usage");
    assert_eq!((s.oom_kills, s.oom_events), (3, 3));
    assert_eq!(s.cpu_usage_ns, 123456789);
    assert_eq!((s.cpu_user_ns, s.cpu_system_ns), (10 * tick, 5 * tick));
    assert_eq!(
        (s.cpu_nr_periods, s.cpu_nr_throttled, s.cpu_throttled_ns),
        (7, 2, 999)
    );
    assert_eq!((s.pids_current, s.pids_limit), (3, 0));
    assert_eq!(cg.oom_kill_count().unwrap(), 3);

    // Without memsw accounting, swap comes from memory.stat.
    fs::remove_file(m.join("memory.memsw.usage_in_bytes")).unwrap();
    assert_eq!(cg.stats().unwrap().swap_usage, 30);
}

#[test]
fn v1_stats_missing_files_are_zero_missing_dirs_not_found() {
    let t = v1_tree();
    let cg = Cgroup::new(t.path(), "/default/t1").unwrap();
    // Only cpuset has the leaf dir (from the fixture); every other file is missing.
    let s = cg.stats().unwrap();
    assert_eq!(
        s.memory_usage + s.cpu_usage_ns + s.cpu_user_ns + s.pids_current + s.oom_kills,
        0
    );
    let gone = Cgroup::new(t.path(), "/nope").unwrap();
    assert!(gone.stats().unwrap_err().is_not_found());
}

#[test]
fn v1_freeze_thaw_and_add_process() {
    let t = v1_tree();
    let r = t.path();
    v1_leaf(r);
    let cg = Cgroup::new(r, "/default/t1").unwrap();
    let state = r.join("freezer/default/t1/freezer.state");
    cg.freeze().unwrap();
    assert_eq!(get(&state), "FROZEN");
    cg.thaw().unwrap();
    assert_eq!(get(&state), "THAWED");
    cg.add_process(77).unwrap();
    for p in cg.paths() {
        assert_eq!(get(&p.join("cgroup.procs")), "77", "{}", p.display());
    }
}

#[test]
fn resources_from_spec() {
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };
    let spec = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 * MIB)
                .swap(-1)
                .reservation(0)
                .build()
                .unwrap(),
        )
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(0i64)
                .period(100_000u64)
                .cpus("0-1")
                .mems("")
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(20).build().unwrap())
        .build()
        .unwrap();
    let r = Resources::from_spec(&spec).unwrap();
    assert_eq!(
        r,
        Resources {
            memory_limit: Some(64 * MIB),
            memory_reservation: None,
            memory_swap: Some(-1),
            cpu_shares: Some(512),
            cpu_quota: None,
            cpu_period: Some(100_000),
            cpuset_cpus: Some("0-1".into()),
            cpuset_mems: None,
            pids_limit: Some(20),
            devices: None,
            unified: Vec::new(),
        }
    );
    assert_eq!(
        Resources::from_spec(&LinuxResourcesBuilder::default().build().unwrap()).unwrap(),
        Resources::default()
    );
}

#[test]
fn resources_from_spec_keeps_device_rules_in_order() {
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResourcesBuilder};
    let dev = |allow: bool, typ, major: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m).minor(3);
        }
        b.build().unwrap()
    };
    let spec = LinuxResourcesBuilder::default()
        .devices(vec![
            dev(false, LinuxDeviceType::A, None, "rwm"),
            dev(true, LinuxDeviceType::C, Some(1), "rwm"),
            dev(true, LinuxDeviceType::B, Some(8), "r"),
        ])
        .build()
        .unwrap();
    let r = Resources::from_spec(&spec).unwrap();
    let shown: Vec<String> = r.devices.unwrap().iter().map(|d| d.to_string()).collect();
    assert_eq!(
        shown,
        ["deny a *:* rwm", "allow c 1:3 rwm", "allow b 8:3 r"]
    );

    // An empty list leaves the cgroup's devices as they are.
    let empty = LinuxResourcesBuilder::default()
        .devices(vec![])
        .build()
        .unwrap();
    assert_eq!(Resources::from_spec(&empty).unwrap().devices, None);

    // A bad rule is refused, named by its place in the list.
    let bad = LinuxResourcesBuilder::default()
        .devices(vec![
            dev(false, LinuxDeviceType::A, None, "rwm"),
            dev(true, LinuxDeviceType::C, Some(1), "rwx"),
        ])
        .build()
        .unwrap();
    let err = Resources::from_spec(&bad).unwrap_err();
    assert!(matches!(err, CgroupError::InvalidResources(_)), "{err}");
    assert!(
        err.to_string().contains("devices[1] (allow c 1:3 rwx)"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Device rules against fixtures

/// The v1 tree plus a mounted `devices` hierarchy, with the leaf's files as the kernel shows
/// them in a new cgroup under an allow-all root.
fn v1_devices_tree() -> (tempfile::TempDir, PathBuf) {
    let t = v1_tree();
    let d = t.path().join("devices/default/t1");
    put(&t.path().join("devices/cgroup.procs"), "");
    put(&d.join("devices.allow"), "");
    put(&d.join("devices.deny"), "");
    put(&d.join("devices.list"), "a *:* rwm\n");
    (t, d)
}

#[test]
fn v1_device_rules_reset_then_allow() {
    let (t, d) = v1_devices_tree();
    let cg = Cgroup::new(t.path(), "/default/t1").unwrap();
    // What is written, in what order, is `Policy::v1_writes` (tested in `devices`); here: that
    // `apply` sends each line to the right file, one write per line. A fixture file keeps only
    // the last write, so a single allow shows the whole sequence.
    cg.apply(&Resources {
        devices: Some(vec![
            devices::rule("deny a"),
            devices::rule("allow c 1:3 rwm"),
        ]),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(get(&d.join("devices.deny")), "a");
    assert_eq!(get(&d.join("devices.allow")), "c 1:3 rwm");

    // The containerd defaults: the last exception is the last allow written.
    cg.apply(&Resources {
        devices: Some(devices::containerd_defaults()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(get(&d.join("devices.deny")), "a");
    assert_eq!(get(&d.join("devices.allow")), "c 10:200 rwm");

    // A deny-list: `a` goes to devices.allow, the exceptions to devices.deny.
    put(&d.join("devices.deny"), "");
    put(&d.join("devices.allow"), "");
    cg.apply(&Resources {
        devices: Some(vec![
            devices::rule("allow a"),
            devices::rule("deny b 8:* w"),
        ]),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(get(&d.join("devices.allow")), "a");
    assert_eq!(get(&d.join("devices.deny")), "b 8:* w");
}

#[test]
fn v1_device_rules_are_checked_before_anything_is_written() {
    let (t, d) = v1_devices_tree();
    v1_leaf(t.path());
    let cg = Cgroup::new(t.path(), "/default/t1").unwrap();
    let err = cg
        .apply(&Resources {
            memory_limit: Some(MIB),
            devices: Some(vec![
                devices::rule("deny a"),
                devices::rule("allow c 136:* rwm"),
                devices::rule("deny c 136:3 rwm"),
            ]),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(err, CgroupError::InvalidResources(_)), "{err}");
    assert!(
        err.to_string().contains("devices[2] (deny c 136:3 rwm)"),
        "{err}"
    );
    assert_eq!(get(&d.join("devices.deny")), "");
    assert_eq!(get(&d.join("devices.allow")), "");
    assert_eq!(
        get(&t.path().join("memory/default/t1/memory.limit_in_bytes")),
        "9223372036854771712\n"
    );
}

#[test]
fn v1_device_rules_need_the_devices_hierarchy() {
    let t = v1_tree();
    v1_leaf(t.path());
    let cg = Cgroup::new(t.path(), "/default/t1").unwrap();
    let err = cg
        .apply(&Resources {
            devices: Some(devices::containerd_defaults()),
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::ControllerMissing {
                controller: "devices",
                ..
            }
        ),
        "{err}"
    );
    // Without device rules, the devices hierarchy is not needed.
    cg.apply(&Resources {
        pids_limit: Some(3),
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn v2_device_rules_attach_a_filter_and_failures_name_the_cgroup() {
    let t = v2_tree();
    let d = v2_leaf(t.path());
    let cg = Cgroup::new(t.path(), "/default/t1").unwrap();
    // A fixture directory is not a cgroup: without root the kernel refuses to load the filter,
    // with root it loads it and refuses to attach it. Either way the error names the cgroup,
    // and since the filter comes first, nothing else is written.
    let err = cg
        .apply(&Resources {
            memory_limit: Some(MIB),
            devices: Some(devices::containerd_defaults()),
            ..Default::default()
        })
        .unwrap_err();
    let CgroupError::DeviceFilter { op, path, .. } = &err else {
        panic!("expected DeviceFilter, got {err}");
    };
    assert!(*op == "load" || *op == "attach", "{err}");
    assert_eq!(path, &d);
    let prefix = format!("cgroup: {op} the device filter for {}: ", d.display());
    assert!(err.to_string().starts_with(&prefix), "{err}");
    assert!(err.raw_os_error().is_some(), "{err:?}");
    assert_eq!(get(&d.join("memory.max")), "max\n");

    // Bad rules are refused before the kernel is asked anything.
    let err = cg
        .apply(&Resources {
            devices: Some(vec![
                devices::rule("allow a"),
                devices::rule("deny c *:* r"),
                devices::rule("allow c 1:3 r"),
            ]),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(err, CgroupError::InvalidResources(_)), "{err}");

    // A cgroup directory that does not exist is named as such.
    let gone = Cgroup::new(t.path(), "/default/gone").unwrap();
    let err = gone
        .apply(&Resources {
            devices: Some(devices::containerd_defaults()),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("default/gone"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Real cgroup v1 (root only)

mod real_v1 {
    use super::*;
    use std::io::Write;
    use std::process::{Child, Command, Stdio};

    /// Kills the child and removes the cgroup even when an assertion fails.
    struct Cleanup {
        cg: Cgroup,
        child: Option<Child>,
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = self.cg.thaw();
            let _ = self.cg.destroy();
        }
    }

    #[test]
    fn real_v1_lifecycle() {
        let root = Path::new("/sys/fs/cgroup");
        if !nix::unistd::geteuid().is_root()
            || !root.join("memory").is_dir()
            || detect(root) != Version::V1
        {
            println!("skipped: needs root and cgroup v1 at /sys/fs/cgroup");
            return;
        }
        let path = format!("/wasm-shim-test-{}", std::process::id());
        let cg = Cgroup::new(root, &path).unwrap();
        let mut guard = Cleanup {
            cg: cg.clone(),
            child: None,
        };
        cg.create().unwrap();
        for p in cg.paths() {
            assert!(p.is_dir(), "{}", p.display());
        }
        cg.apply(&Resources {
            memory_limit: Some(64 * MIB),
            pids_limit: Some(10),
            ..Default::default()
        })
        .unwrap();
        let back = cg.read_limits().unwrap();
        assert_eq!(back.memory_limit, Some(64 * MIB));
        assert_eq!(back.pids_limit, Some(10));

        // The shell waits for a line, then execs sleep: the exec'd image is charged to the new
        // memory cgroup (pages charged before the move stay with the old one).
        let mut child = Command::new("sh")
            .args(["-c", "read line; exec sleep 5"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut stdin = child.stdin.take().unwrap();
        guard.child = Some(child);
        cg.add_process(pid).unwrap(); // fails with ENOSPC if cpuset was not initialized
        assert!(cg.procs().unwrap().contains(&pid));
        stdin.write_all(b"go\n").unwrap();
        drop(stdin);

        cg.freeze().unwrap();
        let state = cg
            .paths()
            .into_iter()
            .find(|p| p.starts_with(root.join("freezer")))
            .unwrap();
        assert_eq!(get(&state.join("freezer.state")).trim(), "FROZEN");
        cg.thaw().unwrap();
        assert_eq!(get(&state.join("freezer.state")).trim(), "THAWED");

        let mut usage = 0;
        crate::cgroup::fs::poll_until(Duration::from_secs(2), |_| {
            usage = cg.stats()?.memory_usage;
            Ok(usage > 0)
        })
        .unwrap();
        let s = cg.stats().unwrap();
        assert!(usage > 0, "{s:?}");
        assert_eq!(s.pids_current, 1, "{s:?}");
        assert_eq!(s.pids_limit, 10);
        assert_eq!(s.memory_limit, 64 * MIB as u64);
        assert_eq!(cg.oom_kill_count().unwrap(), 0);

        let mut child = guard.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        cg.destroy().unwrap();
        for p in cg.paths() {
            assert!(!p.exists(), "{} left behind", p.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Device rules in the real kernel (root only)

mod real_devices {
    use super::*;
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};

    /// Removes the cgroup even when an assertion fails.
    struct Remove(Cgroup);

    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = self.0.destroy();
        }
    }

    /// Opens devices from a shell inside the cgroup ("r:/dev/null" opens for reading,
    /// "w:/dev/zero" for writing, "rw:/dev/full" for both) and returns the probes that were
    /// refused. Each probe is first
    /// checked to succeed outside the cgroup, so a refusal inside is the cgroup's doing.
    fn refused_inside(cg: &Cgroup, probes: &[&str]) -> Vec<String> {
        for p in probes {
            let (mode, path) = p.split_once(':').unwrap();
            let opened = std::fs::OpenOptions::new()
                .read(mode.contains('r'))
                .write(mode.contains('w'))
                .open(path);
            assert!(
                opened.is_ok(),
                "{p} fails outside the cgroup too: {opened:?}"
            );
        }
        let script = r#"read line
for p in "$@"; do
    f=${p#*:}
    case "${p%%:*}" in
        r) (exec 3<"$f") ;;
        w) (exec 3>"$f") ;;
        rw) (exec 3<>"$f") ;;
    esac && echo "$p ok" || echo "$p refused"
done"#;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(probes)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let added = cg.add_process(child.id() as i32);
        if added.is_err() {
            let _ = child.kill();
        }
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(b"go\n");
        drop(stdin);
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child.wait().unwrap();
        added.unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), probes.len(), "{out}");
        lines
            .iter()
            .filter_map(|l| l.strip_suffix(" refused").map(str::to_string))
            .collect()
    }

    #[test]
    fn real_v1_device_rules() {
        let root = Path::new("/sys/fs/cgroup");
        if !nix::unistd::geteuid().is_root()
            || !root.join("devices").is_dir()
            || detect(root) != Version::V1
        {
            println!("skipped: needs root and the cgroup v1 devices hierarchy");
            return;
        }
        let path = format!("/wasm-shim-test-devices-{}", std::process::id());
        let cg = Cgroup::new(root, &path).unwrap();
        let _remove = Remove(cg.clone());
        cg.create().unwrap();
        let list = root.join("devices").join(rel(&path)).join("devices.list");
        assert_eq!(
            get(&list).trim(),
            "a *:* rwm",
            "a new cgroup allows everything"
        );

        cg.apply(&Resources {
            devices: Some(devices::containerd_defaults()),
            ..Default::default()
        })
        .unwrap();
        let body = get(&list);
        let lines: Vec<&str> = body.lines().collect();
        assert!(!lines.contains(&"a *:* rwm"), "{body}");
        assert!(lines.contains(&"c 1:3 rwm"), "{body}");
        assert!(lines.contains(&"c 136:* rwm"), "{body}");
        assert_eq!(lines.len(), 10, "{body}");

        let refused = refused_inside(
            &cg,
            &["r:/dev/null", "w:/dev/null", "r:/dev/zero", "r:/dev/kmsg"],
        );
        assert_eq!(refused, ["r:/dev/kmsg"]);

        // A deny-list denies a request that shares one access bit with a deny exception.
        cg.apply(&Resources {
            devices: Some(vec![
                devices::rule("allow a"),
                devices::rule("deny c 1:7 w"),
            ]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(get(&list).trim(), "a *:* rwm");
        let refused = refused_inside(&cg, &["r:/dev/full", "w:/dev/full", "rw:/dev/full"]);
        assert_eq!(refused, ["w:/dev/full", "rw:/dev/full"]);
        cg.destroy().unwrap();
    }

    /// The v2 filter, loaded and attached for real: needs root and a cgroup2 mount, either the
    /// whole of /sys/fs/cgroup or the hybrid layout's /sys/fs/cgroup/unified.
    #[test]
    fn real_v2_device_filter() {
        let root = [
            Path::new("/sys/fs/cgroup"),
            Path::new("/sys/fs/cgroup/unified"),
        ]
        .into_iter()
        .find(|r| detect(r) == Version::V2);
        let Some(root) = root.filter(|_| nix::unistd::geteuid().is_root()) else {
            println!("skipped: needs root and a cgroup2 mount");
            return;
        };
        let path = format!("/wasm-shim-test-devices-{}", std::process::id());
        let cg = Cgroup::new(root, &path).unwrap();
        let _remove = Remove(cg.clone());
        cg.create().unwrap();
        assert!(refused_inside(&cg, &["r:/dev/zero", "w:/dev/zero", "r:/dev/full"]).is_empty());

        cg.apply(&Resources {
            devices: Some(vec![
                devices::rule("deny a"),
                devices::rule("allow c 1:3 rwm"),
                devices::rule("allow c 1:5 r"),
            ]),
            ..Default::default()
        })
        .unwrap();
        let refused = refused_inside(
            &cg,
            &[
                "r:/dev/null",
                "w:/dev/null",
                "r:/dev/zero",
                "w:/dev/zero",
                "r:/dev/full",
            ],
        );
        assert_eq!(refused, ["w:/dev/zero", "r:/dev/full"]);

        // A deny-list, in a fresh cgroup (filters add up): as on v1, a request that shares one
        // access bit with a deny exception is denied.
        let path = format!("{path}-2");
        let cg = Cgroup::new(root, &path).unwrap();
        let _remove = Remove(cg.clone());
        cg.create().unwrap();
        cg.apply(&Resources {
            devices: Some(vec![
                devices::rule("allow a"),
                devices::rule("deny c 1:7 w"),
            ]),
            ..Default::default()
        })
        .unwrap();
        let refused = refused_inside(&cg, &["r:/dev/full", "w:/dev/full", "rw:/dev/full"]);
        assert_eq!(refused, ["w:/dev/full", "rw:/dev/full"]);
        cg.destroy().unwrap();
    }
}

/// `occupants`: a missing cgroup holds none; processes in cgroups below count (a container that
/// made its own children); on v1 the memory hierarchy is read.
#[test]
fn occupants_count_the_cgroups_below() {
    let t = v2_tree();
    let r = t.path();
    let cg = Cgroup::new(r, "/default/t1").unwrap();
    assert_eq!(cg.occupants().unwrap(), 0, "not created");
    let d = v2_leaf(r);
    assert_eq!(cg.occupants().unwrap(), 0);
    put(&d.join("inner/cgroup.procs"), "41\n42\n");
    put(&d.join("inner/deeper/cgroup.procs"), "43\n");
    assert_eq!(cg.occupants().unwrap(), 3, "only in the cgroups below: still not empty");
    put(&d.join("cgroup.procs"), "40\n");
    assert_eq!(cg.occupants().unwrap(), 4);
    put(&d.join("inner/cgroup.procs"), "garbage\n");
    assert!(cg.occupants().is_err(), "an unreadable cgroup.procs is an error, not an empty cgroup");

    let t = v1_tree();
    let r = t.path();
    let cg = Cgroup::new(r, "/default/t1").unwrap();
    assert_eq!(cg.occupants().unwrap(), 0, "not created");
    v1_leaf(r);
    put(&r.join("memory/default/t1/cgroup.procs"), "");
    put(&r.join("memory/default/t1/sub/cgroup.procs"), "7\n");
    assert_eq!(cg.occupants().unwrap(), 1);
}
