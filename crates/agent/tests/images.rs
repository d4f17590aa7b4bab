//! The image store against real archives (built from Debian's busybox-static by
//! scripts/build-test-images), real overlayfs and a real registry (Debian's docker-registry,
//! fed by skopeo) on loopback. Privileged parts run as root, as here and in CI.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use capstan_agent::images::{ImageStore, ImagesError, RegistryAuth};
use capstan_e2e::registry::Registry;

/// The built archives: `$CAPSTAN_TEST_IMAGES`, else `<workspace>/target/test-images`, built
/// (or refreshed) by the script once per test binary.
fn test_images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = std::env::var_os("CAPSTAN_TEST_IMAGES")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target/test-images"));
        let status = Command::new(workspace.join("scripts/build-test-images"))
            .arg(&dir)
            .status()
            .expect("run scripts/build-test-images");
        assert!(status.success(), "scripts/build-test-images failed");
        dir
    })
}

fn archive(name: &str) -> PathBuf {
    test_images().join(name)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn dir_entries(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn dir_size(path: &Path) -> u64 {
    let meta = fs::symlink_metadata(path).unwrap();
    if meta.is_dir() {
        fs::read_dir(path)
            .unwrap()
            .flatten()
            .map(|e| dir_size(&e.path()))
            .sum::<u64>()
    } else {
        meta.blocks() * 512
    }
}

#[test]
fn imports_a_docker_save_archive_and_resolves_it_by_every_spelling() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let rt = runtime();
    let busybox_tar = archive("busybox.tar");
    let started = Instant::now();
    let names = rt.block_on(store.import_file(&busybox_tar)).unwrap();
    let import_time = started.elapsed();
    assert_eq!(names, vec!["docker.io/library/busybox:latest".to_string()]);

    let images = store.list().unwrap();
    assert_eq!(images.len(), 1);
    let image = &images[0];
    assert!(
        image.id.starts_with("sha256:") && image.id.len() == 71,
        "{}",
        image.id
    );
    assert_eq!(image.names, names);
    assert_eq!(image.config.cmd, vec!["sh".to_string()]);
    assert!(image
        .config
        .env
        .iter()
        .any(|e| e.starts_with("PATH=/usr/local/sbin:")));
    assert_eq!(image.config.user, "");
    // docker save layers are uncompressed: the size is the layer.tar's.
    let layer_tar_size = 2_129_920;
    assert_eq!(image.size, layer_tar_size);
    assert_eq!(image.repo_digests.len(), 1);
    assert!(image.repo_digests[0].starts_with("docker.io/library/busybox@sha256:"));

    for spelling in [
        "busybox",
        "busybox:latest",
        "library/busybox",
        "docker.io/library/busybox:latest",
        image.id.as_str(),
        &image.id[7..19],
        image.repo_digests[0].as_str(),
    ] {
        let found = store.resolve(spelling).unwrap();
        assert_eq!(
            found.map(|i| i.id),
            Some(image.id.clone()),
            "resolving {spelling:?}"
        );
    }
    assert!(store.resolve("busybox:1.0").unwrap().is_none());
    assert!(store.resolve("quay.io/busybox").unwrap().is_none());
    assert!(matches!(
        store.resolve("Busybox"),
        Err(ImagesError::InvalidReference { .. })
    ));

    // The store is an OCI layout: manifest, config and layer blobs, index.json naming them.
    let blobs = dir_entries(&tmp.path().join("blobs/sha256"));
    assert_eq!(blobs.len(), 3, "{blobs:?}");
    assert!(blobs.contains(&image.id[7..]));
    let index = fs::read_to_string(tmp.path().join("index.json")).unwrap();
    assert!(index.contains("\"io.containerd.image.name\": \"docker.io/library/busybox:latest\""));
    assert!(tmp.path().join("oci-layout").exists());
    assert!(dir_entries(&tmp.path().join("tmp")).is_empty());

    // Importing again changes nothing (same manifest digest: the synthesised one is stable).
    rt.block_on(store.import_file(&archive("busybox.tar")))
        .unwrap();
    let again = store.list().unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].repo_digests, image.repo_digests);
    assert_eq!(dir_entries(&tmp.path().join("blobs/sha256")), blobs);

    let started = Instant::now();
    let layers = rt.block_on(store.layers(image)).unwrap();
    let unpack_time = started.elapsed();
    assert_eq!(layers.len(), 1);
    eprintln!(
        "figures: import busybox.tar {} ms, unpack {} ms, store {} KiB (blobs {} KiB, layers {} KiB)",
        import_time.as_millis(),
        unpack_time.as_millis(),
        dir_size(tmp.path()) / 1024,
        dir_size(&tmp.path().join("blobs")) / 1024,
        dir_size(&tmp.path().join("layers")) / 1024,
    );
}

#[test]
fn imports_an_oci_archive_and_shares_its_layer_with_the_docker_save_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let rt = runtime();
    let names = rt
        .block_on(store.import_file(&archive("busybox-oci.tar")))
        .unwrap();
    assert_eq!(names, vec!["capstan.test/busybox-oci:1.0".to_string()]);
    let oci = store
        .resolve("capstan.test/busybox-oci:1.0")
        .unwrap()
        .unwrap();
    assert_eq!(oci.config.cmd, vec!["sh".to_string()]);
    // The OCI archive's layer is gzip'd: its compressed size is far below the tar's.
    assert!(oci.size > 500_000 && oci.size < 2_000_000, "{}", oci.size);
    let manifest_digest = oci.repo_digests[0].split('@').nth(1).unwrap().to_string();
    // The archive's manifest is kept byte for byte (its digest is the archive's).
    let index: serde_json::Value = {
        let mut a = tar::Archive::new(fs::File::open(archive("busybox-oci.tar")).unwrap());
        let mut found = None;
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap() == Path::new("index.json") {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                found = Some(serde_json::from_str(&s).unwrap());
            }
        }
        found.unwrap()
    };
    assert_eq!(index["manifests"][0]["digest"], manifest_digest.as_str());

    rt.block_on(store.import_file(&archive("busybox.tar")))
        .unwrap();
    let docker = store.resolve("busybox").unwrap().unwrap();
    // Same rootfs, same config: one image with two names.
    assert_eq!(docker.id, oci.id);
    assert_eq!(
        store.resolve("busybox").unwrap().unwrap().names,
        vec![
            "capstan.test/busybox-oci:1.0".to_string(),
            "docker.io/library/busybox:latest".to_string()
        ]
    );
    assert_eq!(store.list().unwrap().len(), 1);

    let layers = rt.block_on(store.layers(&oci)).unwrap();
    assert_eq!(layers.len(), 1);
    let root = &layers[0];
    let busybox = fs::metadata(root.join("bin/busybox")).unwrap();
    assert_eq!(busybox.permissions().mode() & 0o7777, 0o755);
    assert_eq!(busybox.len(), fs::metadata("/bin/busybox").unwrap().len());
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let tmp_dir = fs::metadata(root.join("tmp")).unwrap();
    assert_eq!(tmp_dir.permissions().mode() & 0o7777, 0o1777);
    assert_eq!(
        fs::metadata(root.join("root"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o700
    );
    let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nobody:x:65534:65534:"));
    // The archive's fixed mtimes survive (directories' too, set after their content).
    assert_eq!(busybox.mtime(), 1_700_000_000);
    assert_eq!(
        fs::metadata(root.join("bin")).unwrap().mtime(),
        1_700_000_000
    );
}

#[test]
fn layers_are_unpacked_once_and_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let rt = runtime();
    rt.block_on(store.import_file(&archive("busybox.tar")))
        .unwrap();
    let image = store.resolve("busybox").unwrap().unwrap();
    let first = rt.block_on(store.layers(&image)).unwrap();
    let inode = fs::metadata(&first[0]).unwrap().ino();
    let busybox_inode = fs::metadata(first[0].join("bin/busybox")).unwrap().ino();
    let started = Instant::now();
    let second = rt.block_on(store.layers(&image)).unwrap();
    let second_time = started.elapsed();
    assert_eq!(first, second);
    // Not unpacked again: the very same directory and files.
    assert_eq!(fs::metadata(&second[0]).unwrap().ino(), inode);
    assert_eq!(
        fs::metadata(second[0].join("bin/busybox")).unwrap().ino(),
        busybox_inode
    );
    assert_eq!(dir_entries(&tmp.path().join("layers")).len(), 1);
    eprintln!(
        "figures: layers() of an unpacked image {} us",
        second_time.as_micros()
    );
    // The dir is named by the layer's diff id.
    let name = first[0].file_name().unwrap().to_string_lossy().into_owned();
    let config: serde_json::Value = serde_json::from_slice(
        &fs::read(tmp.path().join("blobs/sha256").join(&image.id[7..])).unwrap(),
    )
    .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{name}").as_str()
    );
}

/// A read-only overlay mount of lower dirs, unmounted when dropped.
struct OverlayMount {
    target: PathBuf,
}

impl OverlayMount {
    fn new(lowers_top_first: &[PathBuf], target: &Path) -> OverlayMount {
        let lowerdir: Vec<String> = lowers_top_first
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let status = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("lowerdir={}", lowerdir.join(":")))
            .arg(target)
            .status()
            .unwrap();
        assert!(status.success(), "mounting the overlay");
        OverlayMount {
            target: target.to_path_buf(),
        }
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.target).status();
    }
}

#[test]
fn whiteouts_become_overlayfs_whiteouts_and_hide_lower_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let rt = runtime();
    let names = rt
        .block_on(store.import_file(&archive("layered.tar")))
        .unwrap();
    assert_eq!(names, vec!["capstan.test/layered:1.0".to_string()]);
    let image = store.resolve("capstan.test/layered:1.0").unwrap().unwrap();
    let layers = rt.block_on(store.layers(&image)).unwrap();
    assert_eq!(layers.len(), 2);
    let (lower, upper) = (&layers[0], &layers[1]);

    assert!(lower.join("etc/motd").is_file());
    let whiteout = fs::symlink_metadata(upper.join("etc/motd")).unwrap();
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    assert_eq!((whiteout.uid(), whiteout.gid()), (0, 0));
    assert!(!upper.join("etc/.wh.motd").exists());
    let opaque = xattr(&upper.join("opt/old"), "trusted.overlay.opaque");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
    assert!(!upper.join("opt/old/.wh..wh..opq").exists());
    // Owners, modes, hard links and absolute symlinks as the archive says.
    let home = fs::metadata(upper.join("home/nobody")).unwrap();
    assert_eq!(
        (home.uid(), home.gid(), home.mode() & 0o7777),
        (65534, 65534, 0o750)
    );
    let secret = fs::metadata(upper.join("home/nobody/secret")).unwrap();
    assert_eq!((secret.uid(), secret.mode() & 0o7777), (65534, 0o600));
    assert_eq!(
        fs::metadata(upper.join("etc/added-link")).unwrap().ino(),
        fs::metadata(upper.join("etc/added.txt")).unwrap().ino()
    );
    assert_eq!(
        fs::read_link(upper.join("home/nobody/abs-link")).unwrap(),
        Path::new("/etc/added.txt")
    );

    // And the kernel agrees: an overlay of the two hides what the upper layer deleted.
    let merged = tmp.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let _mount = OverlayMount::new(&[upper.clone(), lower.clone()], &merged);
    assert!(merged.join("bin/busybox").is_file());
    assert!(merged.join("etc/passwd").is_file());
    assert!(
        !merged.join("etc/motd").exists(),
        "the whiteout hides /etc/motd"
    );
    assert_eq!(
        fs::read_to_string(merged.join("etc/added.txt")).unwrap(),
        "added by the upper layer\n"
    );
    assert_eq!(
        dir_entries(&merged.join("opt/old")),
        BTreeSet::from(["b.txt".to_string()])
    );
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 64];
    match rustix::fs::getxattr(path, name, &mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

#[test]
fn rm_drops_a_name_and_collects_what_no_name_reaches() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let rt = runtime();
    rt.block_on(store.import_file(&archive("busybox.tar")))
        .unwrap();
    rt.block_on(store.import_file(&archive("busybox-oci.tar")))
        .unwrap();
    rt.block_on(store.import_file(&archive("layered.tar")))
        .unwrap();
    let busybox = store.resolve("busybox").unwrap().unwrap();
    let layered = store.resolve("capstan.test/layered:1.0").unwrap().unwrap();
    let busybox_layer = rt.block_on(store.layers(&busybox)).unwrap();
    let layered_layers = rt.block_on(store.layers(&layered)).unwrap();
    let blobs = || dir_entries(&tmp.path().join("blobs/sha256"));
    // busybox: config + a tar layer + its manifest; the OCI one: its manifest + a gzip layer
    // (same config); layered: config + 2 layers + manifest.
    assert_eq!(blobs().len(), 3 + 2 + 4);

    // One name of two goes: the image and its layer stay.
    store.remove("busybox").unwrap();
    assert!(store.resolve("busybox").unwrap().is_none());
    let left = store
        .resolve("capstan.test/busybox-oci:1.0")
        .unwrap()
        .unwrap();
    assert_eq!(left.names, vec!["capstan.test/busybox-oci:1.0".to_string()]);
    assert!(busybox_layer[0].is_dir());
    assert_eq!(
        blobs().len(),
        2 + 1 + 4,
        "the docker-save manifest and tar layer went"
    );
    assert!(matches!(
        store.remove("busybox"),
        Err(ImagesError::NotFound(_))
    ));

    // By image id: its last name goes, and with it its blobs and its layer.
    store.remove(&left.id).unwrap();
    assert!(!busybox_layer[0].exists());
    assert_eq!(blobs().len(), 4);
    assert!(layered_layers.iter().all(|l| l.is_dir()));

    store.remove("capstan.test/layered:1.0").unwrap();
    assert!(store.list().unwrap().is_empty());
    assert!(blobs().is_empty());
    assert!(dir_entries(&tmp.path().join("layers")).is_empty());
    assert!(dir_entries(&tmp.path().join("tmp")).is_empty());
}

/// A `docker save` archive of one image whose single layer is `layer` (uncompressed).
fn docker_save_of(layer: &[u8], name: &str) -> Vec<u8> {
    let diff_id = sha256_hex(layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{diff_id}"]}}}}"#
    );
    let config_name = format!("{}.json", sha256_hex(config.as_bytes()));
    let manifest = format!(
        r#"[{{"Config":"{config_name}","RepoTags":["{name}"],"Layers":["{diff_id}/layer.tar"]}}]"#
    );
    let mut b = tar::Builder::new(Vec::new());
    append(&mut b, &format!("{diff_id}/layer.tar"), layer);
    append(&mut b, &config_name, config.as_bytes());
    append(&mut b, "manifest.json", manifest.as_bytes());
    b.into_inner().unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

fn append(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, path, data).unwrap();
}

/// A raw tar header whose name is written as given (tar::Builder refuses `..`).
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    link: &str,
    data: &[u8],
) {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn import_bytes(store: &ImageStore, dir: &Path, bytes: &[u8]) -> Result<Vec<String>, ImagesError> {
    let path = dir.join(format!("archive-{}.tar", sha256_hex(bytes)));
    fs::write(&path, bytes).unwrap();
    runtime().block_on(async {
        store.import_file(&path).await?;
        let image = store
            .resolve("capstan.test/crafted:1")?
            .ok_or(ImagesError::NotFound("crafted".into()))?;
        store.layers(&image).await.map(|_| Vec::new())
    })
}

fn all_paths(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            all_paths(&e.path(), out);
        }
    }
}

#[test]
fn a_layer_escaping_with_dotdot_is_refused_and_writes_nothing_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("store");
    let store = ImageStore::open(&store_dir).unwrap();
    let mut layer = tar::Builder::new(Vec::new());
    raw_entry(&mut layer, tar::EntryType::Regular, "ok.txt", "", b"fine\n");
    raw_entry(
        &mut layer,
        tar::EntryType::Regular,
        "../../../escaped-dotdot",
        "",
        b"evil\n",
    );
    let layer = layer.into_inner().unwrap();
    let err = import_bytes(
        &store,
        tmp.path(),
        &docker_save_of(&layer, "capstan.test/crafted:1"),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ImagesError::Archive { .. }), "{err:?}");
    assert!(message.contains("../../../escaped-dotdot"), "{message}");
    assert!(message.contains("escapes the layer"), "{message}");
    let mut paths = Vec::new();
    all_paths(tmp.path(), &mut paths);
    assert!(
        paths
            .iter()
            .all(|p| !p.ends_with("escaped-dotdot") && !p.ends_with("ok.txt")),
        "{paths:?}"
    );
    assert!(!Path::new("/escaped-dotdot").exists());
    // No half layer left behind, no staging either.
    assert!(dir_entries(&store_dir.join("layers")).is_empty());
    assert!(dir_entries(&store_dir.join("tmp")).is_empty());
}

#[test]
fn symlinks_in_a_layer_resolve_inside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let outside_abs = outside.canonicalize().unwrap();
    let mut layer = tar::Builder::new(Vec::new());
    // `up -> ../../..` and `abs -> <outside>` point out of the layer: writes through them
    // land inside it, at the path they would have inside a container.
    raw_entry(&mut layer, tar::EntryType::Symlink, "up", "../../..", b"");
    raw_entry(
        &mut layer,
        tar::EntryType::Regular,
        "up/through-relative",
        "",
        b"1\n",
    );
    let abs = outside_abs.display().to_string();
    raw_entry(&mut layer, tar::EntryType::Symlink, "root", "/", b"");
    let through_abs = format!("root{abs}/through-absolute");
    raw_entry(
        &mut layer,
        tar::EntryType::Regular,
        &through_abs,
        "",
        b"2\n",
    );
    let layer = layer.into_inner().unwrap();
    import_bytes(
        &store,
        tmp.path(),
        &docker_save_of(&layer, "capstan.test/crafted:1"),
    )
    .unwrap();
    assert!(
        dir_entries(&outside).is_empty(),
        "nothing written outside the layer"
    );
    let image = store.resolve("capstan.test/crafted:1").unwrap().unwrap();
    let dirs = runtime().block_on(store.layers(&image)).unwrap();
    let root = &dirs[0];
    assert_eq!(
        fs::read_to_string(root.join("through-relative")).unwrap(),
        "1\n"
    );
    let inside = root
        .join(abs.trim_start_matches('/'))
        .join("through-absolute");
    assert_eq!(fs::read_to_string(inside).unwrap(), "2\n");
    assert_eq!(
        fs::read_link(root.join("up")).unwrap(),
        Path::new("../../..")
    );
}

#[test]
fn a_hard_link_to_a_host_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let victim = tmp.path().join("victim");
    fs::write(&victim, "host file\n").unwrap();
    let mut layer = tar::Builder::new(Vec::new());
    raw_entry(
        &mut layer,
        tar::EntryType::Link,
        "stolen",
        &victim.canonicalize().unwrap().display().to_string(),
        b"",
    );
    let layer = layer.into_inner().unwrap();
    let err = import_bytes(
        &store,
        tmp.path(),
        &docker_save_of(&layer, "capstan.test/crafted:1"),
    )
    .unwrap_err();
    assert!(matches!(err, ImagesError::Io { .. }), "{err:?}");
    assert_eq!(fs::metadata(&victim).unwrap().nlink(), 1);
}

#[test]
fn a_corrupt_or_foreign_archive_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let rt = runtime();
    let not_tar = tmp.path().join("notes.tar");
    fs::write(&not_tar, vec![b'x'; 4096]).unwrap();
    let err = rt.block_on(store.import_file(&not_tar)).unwrap_err();
    assert!(matches!(err, ImagesError::Archive { .. }), "{err:?}");
    let mut b = tar::Builder::new(Vec::new());
    append(&mut b, "hello.txt", b"hi");
    let plain = tmp.path().join("plain.tar");
    fs::write(&plain, b.into_inner().unwrap()).unwrap();
    let err = rt
        .block_on(store.import_file(&plain))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an image archive"), "{err}");
    // A layer whose content does not match its diff id.
    let layer = {
        let mut l = tar::Builder::new(Vec::new());
        append(&mut l, "a", b"a");
        l.into_inner().unwrap()
    };
    let mut b = tar::Builder::new(Vec::new());
    let config = format!(
        r#"{{"rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}}}}"#,
        "0".repeat(64)
    );
    append(&mut b, "l/layer.tar", &layer);
    append(&mut b, "c.json", config.as_bytes());
    append(
        &mut b,
        "manifest.json",
        br#"[{"Config":"c.json","RepoTags":["capstan.test/crafted:1"],"Layers":["l/layer.tar"]}]"#,
    );
    let err = import_bytes(&store, tmp.path(), &b.into_inner().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("hashes to"), "{err}");
    assert!(dir_entries(&tmp.path().join("store/layers")).is_empty());
    assert!(matches!(
        rt.block_on(store.import_file(&tmp.path().join("missing.tar"))),
        Err(ImagesError::Io { .. })
    ));
}

#[test]
fn import_dir_takes_every_archive_and_survives_a_bad_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let rt = runtime();
    rt.block_on(store.import_dir(&tmp.path().join("absent")))
        .unwrap();
    let dir = tmp.path().join("images");
    fs::create_dir(&dir).unwrap();
    fs::copy(archive("busybox.tar"), dir.join("a-busybox.tar")).unwrap();
    fs::write(dir.join("b-broken.tar"), b"not a tar").unwrap();
    fs::write(dir.join("readme.txt"), b"ignored").unwrap();
    // gzip'd archives import too.
    let gz = fs::File::create(dir.join("c-layered.tar.gz")).unwrap();
    let mut enc = flate2::write::GzEncoder::new(gz, flate2::Compression::fast());
    enc.write_all(&fs::read(archive("layered.tar")).unwrap())
        .unwrap();
    enc.finish().unwrap();
    rt.block_on(store.import_dir(&dir)).unwrap();
    let mut names: Vec<String> = store
        .list()
        .unwrap()
        .into_iter()
        .flat_map(|i| i.names)
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "capstan.test/layered:1.0".to_string(),
            "docker.io/library/busybox:latest".to_string()
        ]
    );
}

/// Run by `two_processes_import_at_once` in child processes (no-op otherwise).
#[test]
fn child_imports_into_a_shared_store() {
    let Some(root) = std::env::var_os("CAPSTAN_IMAGES_CHILD_STORE") else {
        return;
    };
    let store = ImageStore::open(Path::new(&root)).unwrap();
    let rt = runtime();
    for name in ["layered.tar", "busybox.tar", "busybox-oci.tar"] {
        rt.block_on(store.import_file(&archive(name))).unwrap();
    }
    for image in store.list().unwrap() {
        rt.block_on(store.layers(&image)).unwrap();
    }
}

#[test]
fn two_processes_import_at_once_and_the_store_stays_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    // Both children build on the archives: make sure they exist before either starts.
    test_images();
    let exe = std::env::current_exe().unwrap();
    let spawn = || {
        Command::new(&exe)
            .args([
                "--exact",
                "child_imports_into_a_shared_store",
                "--test-threads=1",
            ])
            .env("CAPSTAN_IMAGES_CHILD_STORE", &root)
            .env("CAPSTAN_TEST_IMAGES", test_images())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children: Vec<Child> = (0..3).map(|_| spawn()).collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }
    let store = ImageStore::open(&root).unwrap();
    let mut names: Vec<String> = store
        .list()
        .unwrap()
        .into_iter()
        .flat_map(|i| i.names)
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "capstan.test/busybox-oci:1.0".to_string(),
            "capstan.test/layered:1.0".to_string(),
            "docker.io/library/busybox:latest".to_string()
        ]
    );
    assert_eq!(dir_entries(&root.join("blobs/sha256")).len(), 9);
    // busybox's layer (shared by two images) and layered's two: unpacked once each.
    assert_eq!(dir_entries(&root.join("layers")).len(), 3);
    assert!(dir_entries(&root.join("tmp")).is_empty());
    let rt = runtime();
    for image in store.list().unwrap() {
        for dir in rt.block_on(store.layers(&image)).unwrap() {
            assert!(dir.join("bin").is_dir() || dir.join("etc/added.txt").is_file());
        }
    }
}

#[test]
fn pulls_from_a_real_registry_and_names_a_missing_tag() {
    let registry = Registry::start();
    let host = registry.host();
    registry.push(
        &Registry::docker_archive(&archive("busybox.tar")),
        "busybox:1",
    );
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{host}/busybox:1"))
        .output()
        .unwrap();
    assert!(inspect.status.success());
    let inspected: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let registry_digest = inspected["Digest"].as_str().unwrap().to_string();

    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let rt = runtime();
    let started = Instant::now();
    let image = rt
        .block_on(store.pull(&format!("{host}/busybox:1"), &RegistryAuth::Anonymous))
        .unwrap();
    eprintln!(
        "figures: pull of busybox from loopback {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(image.names, vec![format!("{host}/busybox:1")]);
    assert_eq!(
        image.repo_digests,
        vec![format!("{host}/busybox@{registry_digest}")]
    );
    assert_eq!(image.config.cmd, vec!["sh".to_string()]);
    // Same config as the archive it was pushed from: the same image id.
    let from_archive = ImageStore::open(&tmp.path().join("other")).unwrap();
    rt.block_on(from_archive.import_file(&archive("busybox.tar")))
        .unwrap();
    assert_eq!(
        from_archive.resolve("busybox").unwrap().unwrap().id,
        image.id
    );
    assert_eq!(
        store
            .resolve(&format!("{host}/busybox:1"))
            .unwrap()
            .map(|i| i.id),
        Some(image.id.clone())
    );
    assert_eq!(
        store
            .resolve(&format!("{host}/busybox@{registry_digest}"))
            .unwrap()
            .map(|i| i.id),
        Some(image.id.clone())
    );
    let layers = rt.block_on(store.layers(&image)).unwrap();
    assert!(layers[0].join("bin/busybox").is_file());

    let missing = format!("{host}/busybox:no-such-tag");
    match rt.block_on(store.pull(&missing, &RegistryAuth::Anonymous)) {
        Err(ImagesError::Pull { reference, reason }) => {
            assert_eq!(reference, missing);
            let message = ImagesError::Pull {
                reference,
                reason: reason.clone(),
            }
            .to_string();
            assert!(message.contains("busybox:no-such-tag"), "{message}");
            assert!(
                reason.to_lowercase().contains("manifest unknown"),
                "{reason}"
            );
        }
        other => panic!("pulling a missing tag gave {other:?}"),
    }
    // Nothing of the failed pull stays behind.
    assert!(dir_entries(&tmp.path().join("tmp")).is_empty());
}

#[test]
fn pulls_with_basic_auth_from_a_registry_that_wants_it() {
    let registry = Registry::start_with_auth(true);
    let host = registry.host();
    registry.push(
        &format!("oci-archive:{}", archive("busybox-oci.tar").display()),
        "private/busybox:1",
    );

    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    let rt = runtime();
    let reference = format!("{host}/private/busybox:1");
    match rt.block_on(store.pull(&reference, &RegistryAuth::Anonymous)) {
        Err(ImagesError::Pull { reference: r, .. }) => assert_eq!(r, reference),
        other => panic!("an anonymous pull should be refused, got {other:?}"),
    }
    let wrong = RegistryAuth::Basic {
        username: "capstan".into(),
        password: "wrong".into(),
    };
    assert!(matches!(
        rt.block_on(store.pull(&reference, &wrong)),
        Err(ImagesError::Pull { .. })
    ));
    let right = RegistryAuth::Basic {
        username: "capstan".into(),
        password: "capstan-secret".into(),
    };
    let image = rt.block_on(store.pull(&reference, &right)).unwrap();
    assert_eq!(image.names, vec![reference]);
    assert!(rt.block_on(store.layers(&image)).unwrap()[0]
        .join("bin/busybox")
        .is_file());
}

#[test]
fn imports_the_newer_docker_save_with_blobs_and_gzip_layers() {
    // Docker 25+ saves an OCI layout plus a manifest.json whose paths point into blobs/;
    // rebuild one from the OCI archive: same blobs, a manifest.json naming them.
    let tmp = tempfile::tempdir().unwrap();
    let mut out = tar::Builder::new(Vec::new());
    let mut config = None;
    let mut layer = None;
    let mut a = tar::Archive::new(fs::File::open(archive("busybox-oci.tar")).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        if data.starts_with(&[0x1f, 0x8b]) {
            layer = Some(path.clone());
        } else if data.starts_with(b"{\"architecture\"") {
            config = Some(path.clone());
        }
        append(&mut out, &path, &data);
    }
    let manifest = format!(
        r#"[{{"Config":"{}","RepoTags":["capstan.test/newer-docker:1"],"Layers":["{}"]}}]"#,
        config.unwrap(),
        layer.unwrap()
    );
    append(&mut out, "manifest.json", manifest.as_bytes());
    let path = tmp.path().join("newer.tar");
    fs::write(&path, out.into_inner().unwrap()).unwrap();

    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let rt = runtime();
    let names = rt.block_on(store.import_file(&path)).unwrap();
    // manifest.json wins over index.json: its RepoTags name the image.
    assert_eq!(names, vec!["capstan.test/newer-docker:1".to_string()]);
    let image = store
        .resolve("capstan.test/newer-docker:1")
        .unwrap()
        .unwrap();
    let layers = rt.block_on(store.layers(&image)).unwrap();
    assert!(layers[0].join("bin/busybox").is_file());
    assert!(image.size < 2_000_000, "the gzip'd size: {}", image.size);
}

#[test]
fn zstd_layers_and_archives_import_and_unpack() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    // A docker-save archive whose layer blob is zstd-compressed, itself zstd-compressed.
    let mut layer = tar::Builder::new(Vec::new());
    append(&mut layer, "hello.txt", b"from a zstd layer\n");
    let layer = layer.into_inner().unwrap();
    let diff_id = sha256_hex(&layer);
    let compressed =
        ruzstd::encoding::compress_to_vec(&layer[..], ruzstd::encoding::CompressionLevel::Fastest);
    let config = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["sha256:{diff_id}"]}}}}"#);
    let mut b = tar::Builder::new(Vec::new());
    append(&mut b, "layer.tar.zst", &compressed);
    append(&mut b, "config.json", config.as_bytes());
    append(
        &mut b,
        "manifest.json",
        br#"[{"Config":"config.json","RepoTags":["capstan.test/zstd:1"],"Layers":["layer.tar.zst"]}]"#,
    );
    let archive = ruzstd::encoding::compress_to_vec(
        &b.into_inner().unwrap()[..],
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    let path = tmp.path().join("zstd.tar.zst");
    fs::write(&path, archive).unwrap();
    let rt = runtime();
    assert_eq!(
        rt.block_on(store.import_file(&path)).unwrap(),
        vec!["capstan.test/zstd:1".to_string()]
    );
    let image = store.resolve("capstan.test/zstd:1").unwrap().unwrap();
    assert_eq!(image.size, compressed.len() as u64);
    let dirs = rt.block_on(store.layers(&image)).unwrap();
    assert_eq!(
        fs::read_to_string(dirs[0].join("hello.txt")).unwrap(),
        "from a zstd layer\n"
    );
}
