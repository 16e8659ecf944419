//! The path a process uses to start more copies of itself (the demo's server and sites, the reproduction's
//! federated runs, chaos scenarios).
//!
//! Why not `std::env::current_exe()` alone: rebuilding the binary while a long run is going (a half-hour
//! `reproduce`, say) replaces the file at that path, and the kernel then reports it as `… (deleted)`. Spawning that
//! path fails, and spawning the file now at the original path would mix two builds in one federation. On Linux
//! `/proc/<pid>/exe` of this process names the running image itself, deleted or not, so every child runs the
//! parent's build — also through an intermediary such as `ip netns exec` (for which `/proc/self/exe` would be `ip`).

use std::path::PathBuf;

/// The running executable, as a path a child process can be started from (see the module docs).
pub fn self_exe() -> std::io::Result<PathBuf> {
    let proc_self = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
    if cfg!(target_os = "linux") && proc_self.exists() {
        return Ok(proc_self);
    }
    std::env::current_exe()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`self_exe`] is this binary, and the kind of path it returns survives the binary's deletion: the test copies
    /// `/bin/sh`, starts the copy, deletes it, and has it exec `/proc/<its pid>/exe` (what `self_exe` returns there).
    #[test]
    #[cfg(target_os = "linux")]
    fn a_deleted_binary_can_still_start_a_copy_of_itself() {
        let me = self_exe().unwrap();
        assert_eq!(me, PathBuf::from(format!("/proc/{}/exe", std::process::id())));
        assert_eq!(
            std::fs::canonicalize(&me).unwrap(),
            std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap()
        );
        let dir = std::env::temp_dir().join(format!("histofed-self-exe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join("sh-copy");
        std::fs::copy("/bin/sh", &copy).unwrap();
        let script = format!("rm -f {0}; test ! -e {0} && exec /proc/$$/exe -c 'echo child-ran'", copy.display());
        let out = std::process::Command::new(&copy).arg("-c").arg(&script).output().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "child-ran");
    }
}
