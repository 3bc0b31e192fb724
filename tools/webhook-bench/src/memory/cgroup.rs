//! A memory cgroup per function process: the limit Lambda's `MemorySize` imposes, made real, and
//! what the kernel saw (peak usage, how often the limit was hit, OOM kills).
//!
//! cgroup v1 (a `memory` hierarchy in /proc/self/cgroup): a child of the harness's own memory
//! cgroup, `memory.limit_in_bytes` and then `memory.memsw.limit_in_bytes` (memory + swap, when
//! swap accounting is on) so that swap cannot hide an overrun; read back `max_usage_in_bytes`,
//! `failcnt` and `oom_kill` of `memory.oom_control`. cgroup v2 (the unified hierarchy with the
//! memory controller): a child of the root, `memory.max`, `memory.swap.max` 0, `memory.oom.group`;
//! read back `memory.peak` and `memory.events`. Where neither can be created the run fails: a
//! limit that was asked for is never skipped (RLIMIT_AS is no substitute, see [`no_cgroup`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// Where limited cgroups are made.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    pub version: Version,
    parent: PathBuf,
}

/// What the kernel counted for one cgroup over its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Peak usage (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`); `None` when the kernel
    /// does not keep it (v2 before Linux 5.19).
    pub peak_bytes: Option<u64>,
    /// Times usage hit the limit (v1 `memory.failcnt` + `memory.memsw.failcnt`, v2 `max` of
    /// `memory.events`). Linux 6.18's v1 counters stay 0 even through an OOM kill: `oom_kills`
    /// is the sure sign.
    pub failcnt: u64,
    /// Processes the OOM killer killed in the cgroup (`oom_kill`).
    pub oom_kills: u64,
}

/// One limited cgroup; removed when dropped (after its process has exited).
pub struct MemoryLimit {
    dir: PathBuf,
    procs: File,
    version: Version,
    pub bytes: u64,
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `name value` lines (memory.oom_control, memory.events): the value of `name`.
pub fn keyed(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok())?
    })
}

/// The memory hierarchy of `/proc/self/cgroup` text: v1's `N:...memory...:/path`, or v2's
/// `0::/path` (returned as `None` for the controller list).
pub fn own_memory_cgroup(proc_self_cgroup: &str) -> Option<(Version, String)> {
    let mut v2 = None;
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            return Some((Version::V1, path.to_owned()));
        }
        if controllers.is_empty() {
            v2 = Some((Version::V2, path.to_owned()));
        }
    }
    v2
}

/// Why a limit cannot be applied here, said loudly.
fn no_cgroup(why: &str) -> String {
    format!(
        "a memory limit was asked for, but no memory cgroup can be created here ({why}). \
         Run as root on a machine with the cgroup memory controller (v1 or v2). There is no \
         fallback: RLIMIT_AS bounds address space, not memory. mimalloc (every function's \
         allocator) reserves far more than it touches (VmSize 1.06 GB at 71 MiB RSS for a \
         10 MiB Trybe body), and under an address-space limit it reserves less and behaves \
         otherwise (peak RSS 50 instead of 69 MiB under 96 MiB of address space) and fails \
         where a memory limit would not (an abort at 33 MiB RSS under 64 MiB), as a crash \
         rather than an OOM kill. A limit that cannot be applied is never skipped"
    )
}

impl Hierarchy {
    /// The hierarchy of this process's memory cgroup, checked writable by making and removing a
    /// probe child.
    pub fn detect() -> Result<Hierarchy, String> {
        let text = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| no_cgroup(&format!("/proc/self/cgroup: {e}")))?;
        let hierarchy = match own_memory_cgroup(&text) {
            Some((Version::V1, path)) => {
                let mount = Path::new("/sys/fs/cgroup/memory");
                let own = mount.join(path.trim_start_matches('/'));
                // Inside a cgroup namespace the path may not exist under the mount: use the mount.
                let parent = if own.join("memory.limit_in_bytes").exists() {
                    own
                } else {
                    mount.to_path_buf()
                };
                if !parent.join("memory.limit_in_bytes").exists() {
                    return Err(no_cgroup("cgroup v1 memory hierarchy not mounted"));
                }
                Hierarchy {
                    version: Version::V1,
                    parent,
                }
            }
            Some((Version::V2, _)) => {
                let root = Path::new("/sys/fs/cgroup");
                let controllers =
                    std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
                if !controllers.split_whitespace().any(|c| c == "memory") {
                    return Err(no_cgroup(
                        "cgroup v2 without the memory controller at /sys/fs/cgroup",
                    ));
                }
                // As the CPU cgroup does (setup::Cgroup): children of the root, where enabling a
                // controller for the subtree is allowed.
                let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
                Hierarchy {
                    version: Version::V2,
                    parent: root.to_path_buf(),
                }
            }
            None => return Err(no_cgroup("no memory controller in /proc/self/cgroup")),
        };
        let probe = hierarchy
            .parent
            .join(format!("webhook-bench-probe-{}", std::process::id()));
        std::fs::create_dir(&probe)
            .map_err(|e| no_cgroup(&format!("cannot create {}: {e}", probe.display())))?;
        let _ = std::fs::remove_dir(&probe);
        Ok(hierarchy)
    }

    /// A new cgroup limited to `bytes` of memory (and, on v2 only, to `cpu` = (percent of one
    /// CPU, period µs): v2 has one hierarchy, so a process cannot sit in a CPU cgroup and a
    /// memory cgroup apart).
    pub fn limit(
        &self,
        name: &str,
        bytes: u64,
        cpu: Option<(f64, u64)>,
    ) -> Result<MemoryLimit, String> {
        let dir = self.parent.join(name);
        std::fs::create_dir(&dir).map_err(|e| no_cgroup(&format!("{}: {e}", dir.display())))?;
        // From here on, `limit` removes the directory if anything fails.
        let procs = File::options()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .map_err(|e| format!("{}: {e}", dir.join("cgroup.procs").display()));
        let procs = match procs {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(e);
            }
        };
        let limit = MemoryLimit {
            dir,
            procs,
            version: self.version,
            bytes,
        };
        limit.configure(cpu)?;
        Ok(limit)
    }
}

impl MemoryLimit {
    fn configure(&self, cpu: Option<(f64, u64)>) -> Result<(), String> {
        let bytes = self.bytes.to_string();
        let page = 4096;
        match self.version {
            Version::V1 => {
                write(&self.dir.join("memory.limit_in_bytes"), &bytes)?;
                // memory + swap, after memory alone (it may never be below it).
                let memsw = self.dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &bytes)?;
                }
                let set = read_u64(&self.dir.join("memory.limit_in_bytes"));
                if set.map(|s| s / page) != Some(self.bytes / page) {
                    return Err(format!(
                        "{}: memory.limit_in_bytes reads {set:?} after writing {bytes}",
                        self.dir.display()
                    ));
                }
                if cpu.is_some() {
                    return Err("cgroup v1: the CPU limit is a cgroup of its own".into());
                }
            }
            Version::V2 => {
                write(&self.dir.join("memory.max"), &bytes)?;
                let swap = self.dir.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
                let group = self.dir.join("memory.oom.group");
                if group.exists() {
                    write(&group, "1")?;
                }
                let set = read_u64(&self.dir.join("memory.max"));
                if set.map(|s| s / page) != Some(self.bytes / page) {
                    return Err(format!(
                        "{}: memory.max reads {set:?} after writing {bytes}",
                        self.dir.display()
                    ));
                }
                if let Some((percent, period_us)) = cpu {
                    let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+cpu");
                    let quota = ((percent / 100.0) * period_us as f64).round().max(1000.0) as u64;
                    write(&self.dir.join("cpu.max"), &format!("{quota} {period_us}"))?;
                }
            }
        }
        Ok(())
    }

    /// The spawned process joins this cgroup between fork and exec: its whole init is limited.
    pub fn enter_on_spawn(&self, cmd: &mut Command) {
        crate::setup::join_on_spawn(cmd, &self.procs);
    }

    /// What the kernel counted so far (read after the process exited: the counters stay).
    pub fn stats(&self) -> MemStats {
        let file = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        match self.version {
            Version::V1 => MemStats {
                peak_bytes: read_u64(&self.dir.join("memory.max_usage_in_bytes")),
                // With memsw limited too, a charge over the limit fails on memsw first.
                failcnt: ["memory.failcnt", "memory.memsw.failcnt"]
                    .iter()
                    .filter_map(|f| read_u64(&self.dir.join(f)))
                    .sum(),
                oom_kills: keyed(&file("memory.oom_control"), "oom_kill").unwrap_or(0),
            },
            Version::V2 => {
                let events = file("memory.events");
                MemStats {
                    peak_bytes: read_u64(&self.dir.join("memory.peak")),
                    failcnt: keyed(&events, "max").unwrap_or(0),
                    oom_kills: keyed(&events, "oom_kill").unwrap_or(0),
                }
            }
        }
    }
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        // Its process has been reaped by now; the kernel may take a moment to let go of it.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove cgroup {}", self.dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_memory_cgroup_of_either_version() {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/abc\n0::/\n";
        assert_eq!(
            own_memory_cgroup(v1),
            Some((Version::V1, "/process_api/abc".into()))
        );
        let joined = "5:cpu,memory:/x\n";
        assert_eq!(own_memory_cgroup(joined), Some((Version::V1, "/x".into())));
        assert_eq!(
            own_memory_cgroup("0::/user.slice/session-1.scope\n"),
            Some((Version::V2, "/user.slice/session-1.scope".into()))
        );
        assert_eq!(own_memory_cgroup("3:cpu:/\n"), None);
    }

    #[test]
    fn keyed_counters() {
        let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(keyed(oom, "oom_kill"), Some(2));
        assert_eq!(keyed(oom, "under_oom"), Some(0));
        let events = "low 0\nhigh 0\nmax 17\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed(events, "max"), Some(17));
        assert_eq!(keyed(events, "oom_kill"), Some(1));
        assert_eq!(keyed(events, "oom_killer"), None);
    }
}
