//! Unpacking one layer (tar, tar+gzip or tar+zstd) into `layers/<diff id hex>/`, in overlayfs form: OCI
//! whiteouts become 0/0 character devices, opaque markers the `trusted.overlay.opaque` xattr.
//!
//! Every path is resolved with `openat2(RESOLVE_IN_ROOT)` from the layer's root, so neither
//! `..` nor a symlink (absolute or not) can lead a write outside it; `..` entries are refused
//! outright. The layer is built in `tmp/` and renamed into place once its content has been
//! checked against the diff id, so a crash never leaves half a layer where one is expected.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    chmodat, chownat, fchmod, fchown, fsetxattr, futimens, linkat, makedev, mkdirat, mknodat,
    openat, openat2, statat, symlinkat, unlinkat, utimensat, AtFlags, FileType, Gid, Mode, OFlags,
    ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;

use super::digest::{self, HashingReader};
use super::layout::{io_err, Layout};
use super::ImagesError;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// What unpacking did: `false` when the layer was already there (no work).
pub(crate) struct Unpacked {
    pub dir: PathBuf,
    pub unpacked: bool,
}

/// Unpacks the layer blob `blob` whose uncompressed content is `diff_id`, unless already done.
pub(crate) fn unpack_layer(
    layout: &Layout,
    blob: &Path,
    diff_id: &str,
) -> Result<Unpacked, ImagesError> {
    let hex = digest::sha256_hex(diff_id).map_err(|reason| ImagesError::Archive {
        path: blob.to_path_buf(),
        reason,
    })?;
    let dest = layout.layers_dir().join(hex);
    if dest.is_dir() {
        return Ok(Unpacked {
            dir: dest,
            unpacked: false,
        });
    }
    let started = std::time::Instant::now();
    let staging = layout.staging()?;
    let tmp_root = staging.path().join("layer");
    fs::create_dir(&tmp_root).map_err(io_err(format!("creating {}", tmp_root.display())))?;
    let root = openat(
        rustix::fs::CWD,
        &tmp_root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(format!("opening {}", tmp_root.display()))(e.into()))?;

    let mut tar = tar::Archive::new(HashingReader::new(super::compression::decompressed(blob)?));
    let mut unpacker = Unpacker {
        blob,
        root,
        dir_times: Vec::new(),
    };
    let bad_tar = |e: io::Error| ImagesError::Archive {
        path: blob.to_path_buf(),
        reason: format!("layer {diff_id}: {e}"),
    };
    for entry in tar.entries().map_err(bad_tar)? {
        unpacker.apply(entry.map_err(bad_tar)?)?;
    }
    unpacker.finish()?;
    let got = tar.into_inner().finish().map_err(bad_tar)?;
    if got != diff_id {
        return Err(ImagesError::Archive {
            path: blob.to_path_buf(),
            reason: format!("layer content hashes to {got}, its image says {diff_id}"),
        });
    }
    match fs::rename(&tmp_root, &dest) {
        Ok(()) => {}
        // Another process finished the same layer first: theirs is as good as ours.
        Err(e) if dest.is_dir() => {
            tracing::debug!(layer = %diff_id, error = %e, "layer unpacked concurrently elsewhere");
        }
        Err(e) => return Err(io_err(format!("moving a layer to {}", dest.display()))(e)),
    }
    tracing::info!(layer = %diff_id, elapsed_ms = started.elapsed().as_millis() as u64, "layer unpacked");
    Ok(Unpacked {
        dir: dest,
        unpacked: true,
    })
}

struct Unpacker<'a> {
    blob: &'a Path,
    root: OwnedFd,
    /// Directory mtimes, set last: adding entries to a directory changes its mtime.
    dir_times: Vec<(PathBuf, i64)>,
}

struct Meta {
    mode: Mode,
    uid: Uid,
    gid: Gid,
    mtime: i64,
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

impl Unpacker<'_> {
    fn refuse(&self, raw: &[u8], why: &str) -> ImagesError {
        ImagesError::Archive {
            path: self.blob.to_path_buf(),
            reason: format!(
                "layer entry {:?} {why}: refusing the layer",
                String::from_utf8_lossy(raw)
            ),
        }
    }

    fn sys(&self, what: &str, path: &Path) -> impl FnOnce(Errno) -> ImagesError {
        let context = format!(
            "unpacking {} of {}: {what}",
            path.display(),
            self.blob.display()
        );
        move |e| ImagesError::Io {
            context,
            source: e.into(),
        }
    }

    /// `./a/b` → [a, b]; `..` anywhere is refused (a layer has no business naming it).
    fn components<'p>(&self, raw: &'p [u8]) -> Result<Vec<&'p OsStr>, ImagesError> {
        let mut out = Vec::new();
        for c in raw.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => return Err(self.refuse(raw, "escapes the layer with `..`")),
                c => out.push(OsStr::from_bytes(c)),
            }
        }
        Ok(out)
    }

    fn open_dir(&self, rel: &Path) -> Result<OwnedFd, Errno> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        openat2(
            &self.root,
            rel,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Opens the directory `comps` names (symlinks followed inside the layer), creating what
    /// is missing as root-owned 0755 directories, as tar does.
    fn ensure_dir(&self, comps: &[&OsStr]) -> Result<OwnedFd, ImagesError> {
        let full: PathBuf = comps.iter().collect();
        match self.open_dir(&full) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(self.sys("opening the parent directory", &full)(e)),
        }
        let mut fd = self
            .open_dir(Path::new(""))
            .map_err(self.sys("opening the layer root", &full))?;
        for i in 0..comps.len() {
            let prefix: PathBuf = comps[..=i].iter().collect();
            match self.open_dir(&prefix) {
                Ok(next) => fd = next,
                Err(Errno::NOENT) => {
                    match mkdirat(&fd, comps[i], Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(self.sys("creating a directory", &prefix)(e)),
                    }
                    fd = self
                        .open_dir(&prefix)
                        .map_err(self.sys("opening a created directory", &prefix))?;
                }
                Err(e) => return Err(self.sys("opening a directory", &prefix)(e)),
            }
        }
        Ok(fd)
    }

    /// Makes room for a new entry: a later entry of the same path replaces an earlier one.
    fn remove_existing(&self, dir: &OwnedFd, name: &OsStr, path: &Path) -> Result<(), ImagesError> {
        match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.sys("inspecting an existing entry", path)(e)),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                // std's remove_dir_all does not follow symlinks; the magic link names the
                // directory already resolved inside the layer.
                let p = Path::new("/proc/self/fd")
                    .join(dir.as_raw_fd().to_string())
                    .join(name);
                fs::remove_dir_all(&p).map_err(io_err(format!(
                    "replacing the directory {} of {}",
                    path.display(),
                    self.blob.display()
                )))
            }
            Ok(_) => unlinkat(dir, name, AtFlags::empty())
                .map_err(self.sys("replacing an existing entry", path)),
        }
    }

    fn meta(&self, header: &tar::Header, raw: &[u8]) -> Result<Meta, ImagesError> {
        let bad = |e: io::Error| self.refuse(raw, &format!("has a bad header ({e})"));
        let id = |v: u64| -> Result<u32, ImagesError> {
            u32::try_from(v)
                .ok()
                .filter(|&v| v != u32::MAX)
                .ok_or_else(|| self.refuse(raw, "has an owner id out of range"))
        };
        Ok(Meta {
            mode: Mode::from_raw_mode(header.mode().map_err(bad)? & 0o7777),
            uid: Uid::from_raw(id(header.uid().map_err(bad)?)?),
            gid: Gid::from_raw(id(header.gid().map_err(bad)?)?),
            mtime: i64::try_from(header.mtime().map_err(bad)?).unwrap_or(0),
        })
    }

    fn apply<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ImagesError> {
        let raw = entry.path_bytes().into_owned();
        let comps = self.components(&raw)?;
        let kind = entry.header().entry_type();
        let rel: PathBuf = comps.iter().collect();
        let Some((&name, parent)) = comps.split_last() else {
            // `./`: the layer's root directory itself.
            if kind == tar::EntryType::Directory {
                let meta = self.meta(entry.header(), &raw)?;
                let root = self
                    .open_dir(Path::new(""))
                    .map_err(self.sys("opening the root", &rel))?;
                self.set_owner_mode(&root, &meta, &rel)?;
                self.dir_times.push((rel, meta.mtime));
            }
            return Ok(());
        };
        if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(parent, name, &rel, &raw);
        }
        let xattrs = self.xattrs(&mut entry, &raw)?;
        let meta = self.meta(entry.header(), &raw)?;
        let dir = self.ensure_dir(parent)?;
        match kind {
            tar::EntryType::Directory => {
                let existing = statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW);
                match existing {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                    _ => {
                        self.remove_existing(&dir, name, &rel)?;
                        mkdirat(&dir, name, Mode::from_raw_mode(0o700))
                            .map_err(self.sys("creating a directory", &rel))?;
                    }
                }
                let fd = openat(
                    &dir,
                    name,
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(self.sys("opening a directory", &rel))?;
                self.set_owner_mode(&fd, &meta, &rel)?;
                self.set_xattrs(&fd, &xattrs, &rel)?;
                self.dir_times.push((rel, meta.mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.remove_existing(&dir, name, &rel)?;
                let fd = openat(
                    &dir,
                    name,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(self.sys("creating a file", &rel))?;
                let mut file = File::from(fd);
                io::copy(&mut entry, &mut file).map_err(|e| ImagesError::Archive {
                    path: self.blob.to_path_buf(),
                    reason: format!("reading {}: {e}", rel.display()),
                })?;
                self.set_owner_mode(&file, &meta, &rel)?;
                self.set_xattrs(&file, &xattrs, &rel)?;
                futimens(&file, &times(meta.mtime)).map_err(self.sys("setting times", &rel))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .ok_or_else(|| self.refuse(&raw, "is a symlink without a target"))?;
                self.remove_existing(&dir, name, &rel)?;
                // The target is stored as it is: it is only ever followed inside the
                // container's root (or, here, with RESOLVE_IN_ROOT).
                symlinkat(OsStr::from_bytes(&target), &dir, name)
                    .map_err(self.sys("creating a symlink", &rel))?;
                chownat(
                    &dir,
                    name,
                    Some(meta.uid),
                    Some(meta.gid),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(self.sys("setting a symlink's owner", &rel))?;
                utimensat(&dir, name, &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(self.sys("setting times", &rel))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .ok_or_else(|| self.refuse(&raw, "is a hard link without a target"))?;
                let tcomps = self.components(&target)?;
                let Some((&tname, tparent)) = tcomps.split_last() else {
                    return Err(self.refuse(&raw, "is a hard link to the layer root"));
                };
                let tpath: PathBuf = tcomps.iter().collect();
                if tpath == rel {
                    return Ok(());
                }
                let tdir = self
                    .open_dir(&tparent.iter().collect::<PathBuf>())
                    .map_err(self.sys("finding a hard link's target", &tpath))?;
                self.remove_existing(&dir, name, &rel)?;
                linkat(&tdir, tname, &dir, name, AtFlags::empty())
                    .map_err(self.sys("creating a hard link", &rel))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let file_type = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                self.remove_existing(&dir, name, &rel)?;
                mknodat(&dir, name, file_type, meta.mode, makedev(major, minor))
                    .map_err(self.sys("creating a device node", &rel))?;
                chownat(
                    &dir,
                    name,
                    Some(meta.uid),
                    Some(meta.gid),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(self.sys("setting an owner", &rel))?;
                // After chown (which drops set-id bits) and not subject to the umask.
                chmodat(&dir, name, meta.mode, AtFlags::empty())
                    .map_err(self.sys("setting a mode", &rel))?;
                utimensat(&dir, name, &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(self.sys("setting times", &rel))?;
            }
            other => {
                tracing::debug!(entry = %rel.display(), kind = ?other, "layer entry type skipped");
            }
        }
        Ok(())
    }

    /// `.wh..wh..opq` makes its directory opaque; `.wh.NAME` deletes NAME of lower layers;
    /// other `.wh..wh.` names are aufs bookkeeping with no meaning here.
    fn whiteout(
        &self,
        parent: &[&OsStr],
        name: &OsStr,
        rel: &Path,
        raw: &[u8],
    ) -> Result<(), ImagesError> {
        let dir = self.ensure_dir(parent)?;
        let bytes = name.as_bytes();
        if bytes == OPAQUE_MARKER {
            return fsetxattr(&dir, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(self.sys("marking a directory opaque", rel));
        }
        if bytes.starts_with(b".wh..wh.") {
            return Ok(());
        }
        let hidden = OsStr::from_bytes(&bytes[WHITEOUT_PREFIX.len()..]);
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(self.refuse(raw, "is a whiteout of nothing"));
        }
        let path: PathBuf = parent.iter().copied().chain([hidden]).collect();
        self.remove_existing(&dir, hidden, &path)?;
        mknodat(
            &dir,
            hidden,
            FileType::CharacterDevice,
            Mode::empty(),
            makedev(0, 0),
        )
        .map_err(self.sys("creating a whiteout", &path))?;
        chownat(
            &dir,
            hidden,
            Some(Uid::ROOT),
            Some(Gid::ROOT),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(self.sys("owning a whiteout", &path))
    }

    /// Extended attributes the archive carries (PAX `SCHILY.xattr.*`), except overlayfs's own:
    /// a layer setting those could redirect or hide another layer's files.
    fn xattrs<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
    ) -> Result<Vec<(OsString, Vec<u8>)>, ImagesError> {
        let mut out = Vec::new();
        let Some(exts) = entry
            .pax_extensions()
            .map_err(|e| self.refuse(raw, &format!("has bad PAX headers ({e})")))?
        else {
            return Ok(out);
        };
        for ext in exts {
            let ext = ext.map_err(|e| self.refuse(raw, &format!("has bad PAX headers ({e})")))?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                if name.starts_with("trusted.overlay.") {
                    tracing::warn!(entry = %String::from_utf8_lossy(raw), xattr = name, "overlayfs xattr in a layer ignored");
                    continue;
                }
                out.push((OsString::from(name), ext.value_bytes().to_vec()));
            }
        }
        Ok(out)
    }

    fn set_xattrs(
        &self,
        fd: impl AsFd,
        xattrs: &[(OsString, Vec<u8>)],
        rel: &Path,
    ) -> Result<(), ImagesError> {
        for (name, value) in xattrs {
            fsetxattr(&fd, name.as_os_str(), value, XattrFlags::empty())
                .map_err(self.sys("setting an extended attribute", rel))?;
        }
        Ok(())
    }

    fn set_owner_mode(&self, fd: impl AsFd, meta: &Meta, rel: &Path) -> Result<(), ImagesError> {
        fchown(&fd, Some(meta.uid), Some(meta.gid)).map_err(self.sys("setting an owner", rel))?;
        fchmod(&fd, meta.mode).map_err(self.sys("setting a mode", rel))
    }

    fn finish(self) -> Result<(), ImagesError> {
        for (rel, mtime) in &self.dir_times {
            let fd = self
                .open_dir(rel)
                .map_err(self.sys("reopening a directory", rel))?;
            futimens(&fd, &times(*mtime)).map_err(self.sys("setting times", rel))?;
        }
        Ok(())
    }
}
