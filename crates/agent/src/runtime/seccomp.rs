//! `seccompProfile: RuntimeDefault`: the syscall filter containerd's default profile applies —
//! an allowlist, everything else EPERM — built with seccompiler and installed by the executor.
//!
//! Upstream's profile (moby's `default.json`, which containerd and CRI-O share) allows a fixed
//! set of syscalls to every container and more to containers holding certain capabilities
//! (`mount` needs CAP_SYS_ADMIN, `reboot` CAP_SYS_BOOT, ...); `clone` may not create
//! namespaces without CAP_SYS_ADMIN; `clone3` answers ENOSYS (so libc falls back to `clone`,
//! whose flags a filter can see); `socket` may not open AF_VSOCK; `personality` only takes the
//! harmless personas. Only x86_64 is described: elsewhere RuntimeDefault is refused clearly.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The OCI annotation the runtime sets so the executor (inside the container's init, after
/// libcontainer dropped capabilities) installs the filter.
pub const ANNOTATION: &str = "io.capstan.seccomp";
pub const RUNTIME_DEFAULT: &str = "runtime-default";

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccompProfile RuntimeDefault is not available on {0}")]
    Arch(&'static str),
    #[error("building the seccomp filter: {0}")]
    Build(String),
    #[error("installing the seccomp filter: {0}")]
    Install(String),
}

/// The namespace flags of `clone` (CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER |
/// NEWPID | NEWNET): refused without CAP_SYS_ADMIN.
const CLONE_NAMESPACES: u64 = 0x7E02_0000;
const AF_VSOCK: u64 = 40;
/// `personality` values any container may set: PER_LINUX, PER_LINUX32, UNAME26 variants
/// and the query value.
const PERSONAS: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The two programs to install, in order: the allowlist (EPERM otherwise) and a second that
/// makes `clone3` ENOSYS (the later filter's errno wins between equal actions).
pub fn programs(caps: &[String]) -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = target_arch()?;
    let has = |cap: &str| caps.iter().any(|c| c.trim_start_matches("CAP_") == cap);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in table::ALWAYS {
        rules.insert(*nr, Vec::new());
    }
    for (cap, nrs) in table::BY_CAPABILITY {
        if has(cap) {
            for nr in *nrs {
                rules.insert(*nr, Vec::new());
            }
        }
    }
    let cond = |arg, op, val| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, val)
            .map_err(|e| SeccompError::Build(e.to_string()))
    };
    let rule = |conds| SeccompRule::new(conds).map_err(|e| SeccompError::Build(e.to_string()));
    if !has("SYS_ADMIN") {
        rules.insert(
            libc::SYS_clone,
            vec![rule(vec![cond(
                0,
                SeccompCmpOp::MaskedEq(CLONE_NAMESPACES),
                0,
            )?])?],
        );
    } else {
        rules.insert(libc::SYS_clone, Vec::new());
        rules.insert(libc::SYS_clone3, Vec::new());
    }
    rules.insert(
        libc::SYS_socket,
        vec![rule(vec![cond(0, SeccompCmpOp::Ne, AF_VSOCK)?])?],
    );
    let personas = PERSONAS
        .iter()
        .map(|p| rule(vec![cond(0, SeccompCmpOp::Eq, *p)?]))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_personality, personas);

    let allowlist = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| SeccompError::Build(e.to_string()))?;
    let mut out = vec![BpfProgram::try_from(allowlist)
        .map_err(|e: seccompiler::BackendError| SeccompError::Build(e.to_string()))?];
    if !has("SYS_ADMIN") {
        let clone3 = SeccompFilter::new(
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .map_err(|e| SeccompError::Build(e.to_string()))?;
        out.push(
            BpfProgram::try_from(clone3)
                .map_err(|e: seccompiler::BackendError| SeccompError::Build(e.to_string()))?,
        );
    }
    Ok(out)
}

/// Installs the programs on the calling thread (the container's init, right before exec).
/// Without CAP_SYS_ADMIN the kernel takes a filter only under no_new_privs, so it is set —
/// the one difference from runc, which installs the filter before dropping capabilities:
/// setuid binaries in a RuntimeDefault container do not gain privileges.
pub fn install(programs: &[BpfProgram]) -> Result<(), SeccompError> {
    // SAFETY: prctl with constant arguments; it only affects the calling process.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(SeccompError::Install(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    for program in programs {
        seccompiler::apply_filter_all_threads(program)
            .map_err(|e| SeccompError::Install(e.to_string()))?;
    }
    Ok(())
}

fn target_arch() -> Result<TargetArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else {
        Err(SeccompError::Arch(std::env::consts::ARCH))
    }
}

#[cfg(target_arch = "x86_64")]
mod table {
    use libc::*;

    /// Allowed to every container (moby's unconditional list, x86_64 numbers).
    pub const ALWAYS: &[i64] = &[
        SYS_accept,
        SYS_accept4,
        SYS_access,
        SYS_adjtimex,
        SYS_alarm,
        SYS_arch_prctl,
        SYS_bind,
        SYS_brk,
        SYS_capget,
        SYS_capset,
        SYS_chdir,
        SYS_chmod,
        SYS_chown,
        SYS_clock_adjtime,
        SYS_clock_getres,
        SYS_clock_gettime,
        SYS_clock_nanosleep,
        SYS_close,
        SYS_close_range,
        SYS_connect,
        SYS_copy_file_range,
        SYS_creat,
        SYS_dup,
        SYS_dup2,
        SYS_dup3,
        SYS_epoll_create,
        SYS_epoll_create1,
        SYS_epoll_ctl,
        SYS_epoll_ctl_old,
        SYS_epoll_pwait,
        SYS_epoll_pwait2,
        SYS_epoll_wait,
        SYS_epoll_wait_old,
        SYS_eventfd,
        SYS_eventfd2,
        SYS_execve,
        SYS_execveat,
        SYS_exit,
        SYS_exit_group,
        SYS_faccessat,
        SYS_faccessat2,
        SYS_fadvise64,
        SYS_fallocate,
        SYS_fanotify_mark,
        SYS_fchdir,
        SYS_fchmod,
        SYS_fchmodat,
        SYS_fchown,
        SYS_fchownat,
        SYS_fcntl,
        SYS_fdatasync,
        SYS_fgetxattr,
        SYS_flistxattr,
        SYS_flock,
        SYS_fork,
        SYS_fremovexattr,
        SYS_fsetxattr,
        SYS_fstat,
        SYS_fstatfs,
        SYS_fsync,
        SYS_ftruncate,
        SYS_futex,
        SYS_futex_waitv,
        SYS_futimesat,
        SYS_getcpu,
        SYS_getcwd,
        SYS_getdents,
        SYS_getdents64,
        SYS_getegid,
        SYS_geteuid,
        SYS_getgid,
        SYS_getgroups,
        SYS_getitimer,
        SYS_getpeername,
        SYS_getpgid,
        SYS_getpgrp,
        SYS_getpid,
        SYS_getppid,
        SYS_getpriority,
        SYS_getrandom,
        SYS_getresgid,
        SYS_getresuid,
        SYS_getrlimit,
        SYS_get_robust_list,
        SYS_getrusage,
        SYS_getsid,
        SYS_getsockname,
        SYS_getsockopt,
        SYS_get_thread_area,
        SYS_gettid,
        SYS_gettimeofday,
        SYS_getuid,
        SYS_getxattr,
        SYS_inotify_add_watch,
        SYS_inotify_init,
        SYS_inotify_init1,
        SYS_inotify_rm_watch,
        SYS_io_cancel,
        SYS_ioctl,
        SYS_io_destroy,
        SYS_io_getevents,
        SYS_ioprio_get,
        SYS_ioprio_set,
        SYS_io_setup,
        SYS_io_submit,
        SYS_kill,
        SYS_landlock_add_rule,
        SYS_landlock_create_ruleset,
        SYS_landlock_restrict_self,
        SYS_lchown,
        SYS_lgetxattr,
        SYS_link,
        SYS_linkat,
        SYS_listen,
        SYS_listxattr,
        SYS_llistxattr,
        SYS_lremovexattr,
        SYS_lseek,
        SYS_lsetxattr,
        SYS_lstat,
        SYS_madvise,
        SYS_membarrier,
        SYS_memfd_create,
        SYS_memfd_secret,
        SYS_mincore,
        SYS_mkdir,
        SYS_mkdirat,
        SYS_mknod,
        SYS_mknodat,
        SYS_mlock,
        SYS_mlock2,
        SYS_mlockall,
        SYS_mmap,
        SYS_modify_ldt,
        SYS_mprotect,
        SYS_mq_getsetattr,
        SYS_mq_notify,
        SYS_mq_open,
        SYS_mq_timedreceive,
        SYS_mq_timedsend,
        SYS_mq_unlink,
        SYS_mremap,
        SYS_msgctl,
        SYS_msgget,
        SYS_msgrcv,
        SYS_msgsnd,
        SYS_msync,
        SYS_munlock,
        SYS_munlockall,
        SYS_munmap,
        SYS_name_to_handle_at,
        SYS_nanosleep,
        SYS_newfstatat,
        SYS_open,
        SYS_openat,
        SYS_openat2,
        SYS_pause,
        SYS_pidfd_open,
        SYS_pidfd_send_signal,
        SYS_pipe,
        SYS_pipe2,
        SYS_pkey_alloc,
        SYS_pkey_free,
        SYS_pkey_mprotect,
        SYS_poll,
        SYS_ppoll,
        SYS_prctl,
        SYS_pread64,
        SYS_preadv,
        SYS_preadv2,
        SYS_prlimit64,
        SYS_process_mrelease,
        SYS_pselect6,
        SYS_pwrite64,
        SYS_pwritev,
        SYS_pwritev2,
        SYS_read,
        SYS_readahead,
        SYS_readlink,
        SYS_readlinkat,
        SYS_readv,
        SYS_recvfrom,
        SYS_recvmmsg,
        SYS_recvmsg,
        SYS_remap_file_pages,
        SYS_removexattr,
        SYS_rename,
        SYS_renameat,
        SYS_renameat2,
        SYS_restart_syscall,
        SYS_rmdir,
        SYS_rseq,
        SYS_rt_sigaction,
        SYS_rt_sigpending,
        SYS_rt_sigprocmask,
        SYS_rt_sigqueueinfo,
        SYS_rt_sigreturn,
        SYS_rt_sigsuspend,
        SYS_rt_sigtimedwait,
        SYS_rt_tgsigqueueinfo,
        SYS_sched_getaffinity,
        SYS_sched_getattr,
        SYS_sched_getparam,
        SYS_sched_get_priority_max,
        SYS_sched_get_priority_min,
        SYS_sched_getscheduler,
        SYS_sched_rr_get_interval,
        SYS_sched_setaffinity,
        SYS_sched_setattr,
        SYS_sched_setparam,
        SYS_sched_setscheduler,
        SYS_sched_yield,
        SYS_seccomp,
        SYS_select,
        SYS_semctl,
        SYS_semget,
        SYS_semop,
        SYS_semtimedop,
        SYS_sendfile,
        SYS_sendmmsg,
        SYS_sendmsg,
        SYS_sendto,
        SYS_setfsgid,
        SYS_setfsuid,
        SYS_setgid,
        SYS_setgroups,
        SYS_setitimer,
        SYS_setpgid,
        SYS_setpriority,
        SYS_setregid,
        SYS_setresgid,
        SYS_setresuid,
        SYS_setreuid,
        SYS_setrlimit,
        SYS_set_robust_list,
        SYS_setsid,
        SYS_setsockopt,
        SYS_set_thread_area,
        SYS_set_tid_address,
        SYS_setuid,
        SYS_setxattr,
        SYS_shmat,
        SYS_shmctl,
        SYS_shmdt,
        SYS_shmget,
        SYS_shutdown,
        SYS_sigaltstack,
        SYS_signalfd,
        SYS_signalfd4,
        SYS_socketpair,
        SYS_splice,
        SYS_stat,
        SYS_statfs,
        SYS_statx,
        SYS_symlink,
        SYS_symlinkat,
        SYS_sync,
        SYS_sync_file_range,
        SYS_syncfs,
        SYS_sysinfo,
        SYS_tee,
        SYS_tgkill,
        SYS_time,
        SYS_timer_create,
        SYS_timer_delete,
        SYS_timer_getoverrun,
        SYS_timer_gettime,
        SYS_timer_settime,
        SYS_timerfd_create,
        SYS_timerfd_gettime,
        SYS_timerfd_settime,
        SYS_times,
        SYS_tkill,
        SYS_truncate,
        SYS_umask,
        SYS_uname,
        SYS_unlink,
        SYS_unlinkat,
        SYS_utime,
        SYS_utimensat,
        SYS_utimes,
        SYS_vfork,
        SYS_vmsplice,
        SYS_wait4,
        SYS_waitid,
        SYS_write,
        SYS_writev,
        // Since kernel 4.8 a seccomp filter cannot be bypassed through ptrace: moby allows
        // these to every container.
        SYS_kcmp,
        SYS_pidfd_getfd,
        SYS_process_madvise,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_ptrace,
    ];

    /// Allowed only to containers holding the capability (without `CAP_`).
    pub const BY_CAPABILITY: &[(&str, &[i64])] = &[
        (
            "SYS_ADMIN",
            &[
                SYS_bpf,
                SYS_fanotify_init,
                SYS_fsconfig,
                SYS_fsmount,
                SYS_fsopen,
                SYS_fspick,
                SYS_lookup_dcookie,
                SYS_mount,
                SYS_mount_setattr,
                SYS_move_mount,
                SYS_open_tree,
                SYS_perf_event_open,
                SYS_quotactl,
                SYS_quotactl_fd,
                SYS_setdomainname,
                SYS_sethostname,
                SYS_setns,
                SYS_syslog,
                SYS_umount2,
                SYS_unshare,
            ],
        ),
        ("SYS_BOOT", &[SYS_reboot]),
        ("SYS_CHROOT", &[SYS_chroot]),
        (
            "SYS_MODULE",
            &[SYS_delete_module, SYS_init_module, SYS_finit_module],
        ),
        ("SYS_PACCT", &[SYS_acct]),
        ("SYS_RAWIO", &[SYS_iopl, SYS_ioperm]),
        ("SYS_TIME", &[SYS_settimeofday, SYS_clock_settime]),
        ("SYS_TTY_CONFIG", &[SYS_vhangup]),
        (
            "SYS_NICE",
            &[SYS_get_mempolicy, SYS_mbind, SYS_set_mempolicy],
        ),
        ("SYSLOG", &[SYS_syslog]),
        ("BPF", &[SYS_bpf]),
        ("PERFMON", &[SYS_perf_event_open]),
    ];
}

#[cfg(not(target_arch = "x86_64"))]
mod table {
    pub const ALWAYS: &[i64] = &[];
    pub const BY_CAPABILITY: &[(&str, &[i64])] = &[];
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn the_default_capabilities_get_two_programs_and_sys_admin_one() {
        let default: Vec<String> = ["CHOWN", "SYS_CHROOT", "NET_RAW"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(programs(&default).expect("build").len(), 2);
        let admin = vec!["CAP_SYS_ADMIN".to_string()];
        assert_eq!(programs(&admin).expect("build").len(), 1);
    }
}
